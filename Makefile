# The verbs: make setup | build | run | cluster | cluster-down | conformance | test | e2e | e2e-multinode | chaos | vm-test | vm-clean | bench | install | deb | clean-env | fmt | lint
# setup, run and test start containerd and a registry on loopback (root needed); cluster, test,
# e2e and chaos also a real control plane (integration/cluster/up.sh, upstream binaries from KUBE_BIN).
# chaos (tests/chaos.rs, not part of make test) restarts containerd and kills nodelet: see its target.

CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
ENV := integration/env
CLUSTER := integration/cluster
# The admin kubeconfig of the local control plane (make cluster, make test).
CLUSTER_KUBECONFIG := $(or $(CLUSTER_DIR),/var/lib/nodelet-cluster)/admin.kubeconfig

.PHONY: setup build run cluster cluster-down conformance test e2e e2e-multinode chaos vm-test vm-clean bench install deb clean-env fmt lint

setup:
	bash $(ENV)/setup.sh

build:
	$(CARGO) build --release -p nodelet -p nodelet-cni

run: setup build
	bash $(ENV)/run-demo.sh

# A one-node real cluster on this machine: the control plane on loopback and the release
# nodelet as its node (named after this host). Leaves it running; ends with KUBECONFIG=<admin>.
# NODES=3: three nodes, each a network namespace with its own containerd and nodelet, joined by
# a bridge (10.254.0.0/24; the apiserver listens on 10.254.0.1): integration/cluster/nodes-up.sh.
NODES ?= 1
cluster: setup build
	@if [ "$(NODES)" -gt 1 ]; then NODES=$(NODES) bash $(CLUSTER)/nodes-up.sh; else bash $(CLUSTER)/node-up.sh; fi

# Removes the nodes' pods, stops the nodes (namespaces, containerds, nodelets, mounts, the
# bridge, the registry relay) and the control plane, and removes their state.
cluster-down:
	NODES_CONTROL_PLANE=keep bash $(CLUSTER)/nodes-down.sh
	bash $(CLUSTER)/node-down.sh

# The upstream [NodeConformance] specs (e2e.test and ginkgo from KUBE_TEST_BIN, default the
# shared release unpacked) against the local cluster (make cluster first) or KUBECONFIG=path.
# About 15 minutes; prints the failed specs and `conformance: N passed, M failed`.
conformance:
	bash $(CLUSTER)/conformance.sh

# The integration tests run the nodelet-cni binary built beside nodelet: build it first. The
# end-to-end cases join the local control plane, brought up here (and left running, as containerd).
test: setup
	$(CARGO) build --workspace --exclude nodelet-pause
	bash $(CLUSTER)/up.sh
	$(CARGO) test --workspace --exclude nodelet-pause -- --test-threads=4

# The end-to-end suite. Without KUBECONFIG it runs against the local control plane (as make
# test does); with KUBECONFIG=path it joins this machine to that cluster as a node, one case at
# a time. NODE_KUBECONFIG=path gives nodelet a node's own credentials, which must be those of
# system:node:$(NODE_NAME) (NODE_NAME defaults to this host's name); PROXY_KUBECONFIG=path
# gives the Service proxy kube-proxy's (nodelet --proxy-kubeconfig).
e2e: setup
	$(CARGO) build --workspace --exclude nodelet-pause
ifdef KUBECONFIG
	NODELET_E2E_KUBECONFIG="$(abspath $(KUBECONFIG))" \
	NODELET_E2E_NODE_KUBECONFIG="$(if $(NODE_KUBECONFIG),$(abspath $(NODE_KUBECONFIG)))" \
	NODELET_E2E_PROXY_KUBECONFIG="$(if $(PROXY_KUBECONFIG),$(abspath $(PROXY_KUBECONFIG)))" \
	NODELET_E2E_NODE_NAME="$(if $(NODE_KUBECONFIG),$(or $(NODE_NAME),$(shell hostname | tr A-Z a-z)))" \
	$(CARGO) test --test e2e -- --test-threads=1
else
	bash $(CLUSTER)/up.sh
	$(CARGO) test --test e2e
endif

# The multi-node cases alone (tests/multinode.rs, also part of make test: about 2 minutes): three
# nodes in network namespaces on a control plane of their own, and a node with an external CNI.
e2e-multinode: setup
	$(CARGO) build --workspace --exclude nodelet-pause
	$(CARGO) test --test multinode -- --nocapture

# The fault suite (tests/chaos.rs, issue 13): SIGKILLs nodelet under pod churn, restarts the
# containerd the env scripts started, stops a private kube-apiserver while containers crash, and
# fuzzes manifests, nodelet-cni and both ports. Prints `chaos: <name> <figure>` lines. Settings:
# NODELET_CHAOS_PODS (30), NODELET_CHAOS_KILLS (20), NODELET_CHAOS_OUTAGE_SECS (300),
# NODELET_CHAOS_FUZZ_INPUTS (1000), NODELET_CHAOS_SEED (printed; replays a run).
chaos: setup
	$(CARGO) build --workspace --exclude nodelet-pause
	bash $(CLUSTER)/up.sh
	$(CARGO) test --test chaos -- --ignored --test-threads=1 --nocapture

# nodelet where operators run it (tests/vm.rs, integration/vm/): a Debian 12 guest under QEMU
# (systemd, cgroup v2, containerd with SystemdCgroup = true) installs this tree's .deb with
# dpkg -i and joins a control plane of its own on this machine; checks the node, pod cgroups
# and limits, OOM kills, stats, logs/exec, a service restart, a reboot and the purge. QEMU and
# the guest image are built once and cached in /var/lib/nodelet-vm (make vm-clean removes
# them). Settings: VM_PROFILE (debug; release packages make deb's binaries), VM_CGROUP_DRIVER
# (systemd; cgroupfs), VM_ACCEL (tcg,thread=multi).
vm-test: setup
	bash integration/vm/vm-test.sh

vm-clean:
	rm -rf $(or $(VM_DIR),/var/lib/nodelet-vm)

bench:
	@if [ -f $(ENV)/bench.sh ]; then bash $(ENV)/bench.sh; \
	else echo "make bench: $(ENV)/bench.sh does not exist yet; nothing to run"; fi

# nodelet as a systemd service without a package: the nodelet package's files (the list is
# packaging/install.sh), binaries from BIN_DIR (default the release build: make build first) into
# PREFIX/bin (default /usr/local/bin), the unit into UNITDIR (default PREFIX/lib/systemd/system);
# DESTDIR stages. An existing /etc/nodelet/config.yaml or /etc/default/nodelet is kept.
PREFIX ?= /usr/local
UNITDIR ?= $(PREFIX)/lib/systemd/system
BIN_DIR ?= $(TARGET_DIR)/release
install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" UNITDIR="$(UNITDIR)" BIN_DIR="$(BIN_DIR)" bash packaging/install.sh nodelet
	@echo "make install: nodelet is installed; configure it in $(DESTDIR)/etc/nodelet/config.yaml and"
	@echo "  $(DESTDIR)/etc/default/nodelet (NODELET_ARGS), then start it now and at boot with:"
	@echo "  systemctl daemon-reload && systemctl enable --now nodelet"

# The Debian packages nodelet and nodelet-kubelet (nodelet as the kubelet, for kubeadm) of the
# release build, into $(TARGET_DIR)/deb (packaging/deb/build.sh).
deb: build
	BIN_DIR="$(TARGET_DIR)/release" OUT_DIR="$(TARGET_DIR)/deb" bash packaging/deb/build.sh

clean-env:
	bash $(CLUSTER)/node-down.sh
	bash $(ENV)/stop.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
