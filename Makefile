# The verbs: make setup | build | run | test | e2e | bench | install | clean-env | fmt | lint
# setup, run and test start containerd and a registry on loopback (root needed).

CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
ENV := integration/env

.PHONY: setup build run test e2e bench install clean-env fmt lint

setup:
	bash $(ENV)/setup.sh

build:
	$(CARGO) build --release -p nodelet -p nodelet-cni

run: setup build
	bash $(ENV)/run-demo.sh

# The integration tests run the nodelet-cni binary built beside nodelet: build it first.
test: setup
	$(CARGO) build --workspace --exclude nodelet-pause
	$(CARGO) test --workspace --exclude nodelet-pause -- --test-threads=4

# The end-to-end suite. Without KUBECONFIG it runs against the project's test apiserver (as
# make test does); with KUBECONFIG=path it joins this machine to that cluster as a node, one
# case at a time. NODE_KUBECONFIG=path gives nodelet a node's own credentials, which must be
# those of system:node:$(NODE_NAME) (NODE_NAME defaults to this host's name).
e2e: setup
	$(CARGO) build --workspace --exclude nodelet-pause
ifdef KUBECONFIG
	NODELET_E2E_KUBECONFIG="$(abspath $(KUBECONFIG))" \
	NODELET_E2E_NODE_KUBECONFIG="$(if $(NODE_KUBECONFIG),$(abspath $(NODE_KUBECONFIG)))" \
	NODELET_E2E_NODE_NAME="$(if $(NODE_KUBECONFIG),$(or $(NODE_NAME),$(shell hostname | tr A-Z a-z)))" \
	$(CARGO) test --test e2e -- --test-threads=1
else
	$(CARGO) test --test e2e
endif

bench:
	@if [ -f $(ENV)/bench.sh ]; then bash $(ENV)/bench.sh; \
	else echo "make bench: $(ENV)/bench.sh does not exist yet; nothing to run"; fi

install:
	install -D -m 0755 $(TARGET_DIR)/release/nodelet /usr/local/bin/nodelet
	install -D -m 0755 $(TARGET_DIR)/release/nodelet-cni /opt/cni/bin/nodelet-cni

clean-env:
	bash $(ENV)/stop.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
