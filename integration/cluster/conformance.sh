#!/usr/bin/env bash
# `make conformance`: the upstream node conformance specs ([NodeConformance], without [Serial],
# [Disruptive], [Slow] and [Flaky]) run by the upstream e2e suite against a cluster whose node
# is nodelet: the local one `make cluster` started, or any cluster named by KUBECONFIG that this
# machine has joined as a node. Images are remapped into the local registry.
#
#   KUBE_TEST_BIN   folder with e2e.test, ginkgo, agnhost and nonewprivs (an unpacked
#                   kubernetes-test release); default: ../shared/kube/bin unpacked into a cache
#   KUBECONFIG      the cluster's admin kubeconfig; default: the local cluster's
#   REPO_LIST       KUBE_TEST_REPO_LIST file; default: ../shared/kube/e2e-repo-list.yaml
#   PROCS           parallel ginkgo processes (default 4); FOCUS / SKIP override the regexps
#   REPORT_DIR      where the JUnit report and the suite's log go
#
# Prints the names of the specs that failed, then `conformance: N passed, M failed`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

SHARED_KUBE=$(dirname "$KUBE_BIN_XZ")
KUBECONFIG=${KUBECONFIG:-$CLUSTER_DIR/admin.kubeconfig}
REPO_LIST=${REPO_LIST:-$SHARED_KUBE/e2e-repo-list.yaml}
PROCS=${PROCS:-4}
FOCUS=${FOCUS:-'\[NodeConformance\]'}
SKIP=${SKIP:-'\[Serial\]|\[Disruptive\]|\[Slow\]|\[Flaky\]'}
REPORT_DIR=${REPORT_DIR:-/var/log/nodelet-env/conformance-$(date +%Y%m%d-%H%M%S)}

[[ -f $KUBECONFIG ]] || die "no kubeconfig at $KUBECONFIG: run \`make cluster\` first, or pass KUBECONFIG=<admin kubeconfig>"
[[ -f $REPO_LIST ]] || die "REPO_LIST=$REPO_LIST does not exist (the image remapping for this offline machine)"
mkdir -p "$REPORT_DIR"

# The test binaries: given, or the shared .xz files unpacked once into the cache.
if [[ -n ${KUBE_TEST_BIN:-} ]]; then
    KUBE_TEST_BIN=$(realpath "$KUBE_TEST_BIN")
else
    KUBE_TEST_BIN=$KUBE_BIN_CACHE
    unpack_shared e2e.test ginkgo agnhost nonewprivs
fi
for name in e2e.test ginkgo; do
    [[ -x $KUBE_TEST_BIN/$name ]] || die "KUBE_TEST_BIN=$KUBE_TEST_BIN has no executable $name"
done

# The stand-in images the specs pull, built and pushed when the registry lacks them. The tags
# are reused, so containerd's cached copies go when they are rebuilt.
if ! curl -fsS --max-time 5 "http://$NODELET_REGISTRY/v2/e2e/agnhost/tags/list" 2>/dev/null | grep -q '2.56'; then
    log "building the e2e stand-in images into $NODELET_REGISTRY"
    python3 "$SHARED_KUBE/images/mkimages.py" --bin "$KUBE_TEST_BIN" >"$REPORT_DIR/images.log" 2>&1 \
        || die "building the stand-in images failed: see $REPORT_DIR/images.log"
    ctr -n k8s.io images ls -q 2>/dev/null | grep '/e2e' | xargs -r ctr -n k8s.io images rm >/dev/null 2>&1 || true
fi

log "running [NodeConformance] with $PROCS processes (about 15 minutes); log: $REPORT_DIR/e2e.log"
set +e
KUBE_TEST_REPO_LIST=$REPO_LIST "$KUBE_TEST_BIN/ginkgo" -p --procs="$PROCS" --no-color \
    --focus="$FOCUS" --skip="$SKIP" \
    "$KUBE_TEST_BIN/e2e.test" -- \
    --kubeconfig="$KUBECONFIG" --provider=skeleton --report-dir="$REPORT_DIR" \
    >"$REPORT_DIR/e2e.log" 2>&1
suite_rc=$?
set -e

# One line per failed spec, then the count, from the suite's JUnit report.
python3 - "$REPORT_DIR" "$suite_rc" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
report_dir, rc = sys.argv[1], int(sys.argv[2])
passed, failed = 0, []
files = sorted(glob.glob(f"{report_dir}/junit*.xml"))
for path in files:
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        if name.startswith("[SynchronizedBeforeSuite]") or name.startswith("[SynchronizedAfterSuite]") or name.startswith("[ReportAfterSuite]"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(name)
            continue
        if case.find("skipped") is not None:
            continue
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        else:
            passed += 1
if not files:
    print(f"conformance: no JUnit report in {report_dir} (the suite exited {rc}); see {report_dir}/e2e.log", file=sys.stderr)
    sys.exit(2)
for name in failed:
    print(f"FAILED: {name}")
print(f"report: {report_dir}")
print(f"conformance: {passed} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
PY
