# The verbs: make setup | build | run | test | e2e | bench | install | clean-env | fmt | lint
# setup, run and test start containerd and a registry on loopback (root needed).

CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
ENV := integration/env

.PHONY: setup build run test e2e bench install clean-env fmt lint

setup:
	bash $(ENV)/setup.sh

build:
	$(CARGO) build --release --workspace --exclude nodelet-pause

run: setup build
	bash $(ENV)/run-demo.sh

# The integration tests run the nodelet-cni binary built beside nodelet: build it first.
test: setup
	$(CARGO) build --workspace --exclude nodelet-pause
	$(CARGO) test --workspace --exclude nodelet-pause -- --test-threads=4

e2e:
	@echo "make e2e: the end-to-end suite against an apiserver is not written yet; nothing to run"

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
