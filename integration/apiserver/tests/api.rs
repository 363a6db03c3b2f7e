//! The REST protocol over HTTPS: CRUD, watch, errors, patches, deletion, authn/authz, restart.

mod common;

use std::time::Duration;

use common::{node, pod, server, Client, SECOND};
use nodelet_test_apiserver::{start, Options};
use serde_json::{json, Value};

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn discovery_and_health() {
    let (s, _dir) = server().await;
    let c = Client::admin(&s);
    assert_eq!(c.get("/version").await.body["gitVersion"], "v1.33.0");
    let v1 = c.get("/api/v1").await.body;
    let pods = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap()
        .clone();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["namespaced"], true);
    assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));
    let groups = c.get("/apis").await.body;
    assert!(groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "coordination.k8s.io"));
    assert_eq!(
        c.get("/apis/discovery.k8s.io/v1").await.body["resources"][0]["kind"],
        "EndpointSlice"
    );
    let anon = Client::new(&s, None);
    assert_eq!(anon.get("/healthz").await.body, json!("ok"));
    assert_eq!(anon.get("/readyz").await.code, 200);
    assert_eq!(c.get("/apis/nothing.example/v1").await.code, 404);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn unauthenticated_is_401() {
    let (s, _dir) = server().await;
    let r = Client::new(&s, None).get(PODS).await;
    assert_eq!(r.code, 401);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["reason"], "Unauthorized");
    let r = Client::new(&s, None).with_token("made-up").get(PODS).await;
    assert_eq!(r.code, 401);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn create_get_list_and_errors() {
    let (s, _dir) = server().await;
    let c = Client::admin(&s);
    let r = c.post(PODS, pod("p1", Some("n1"))).await;
    assert_eq!(r.code, 201, "{}", r.body);
    let p = r.body;
    assert!(!p["metadata"]["uid"].as_str().unwrap().is_empty());
    assert!(p["metadata"]["creationTimestamp"].is_string());
    assert_eq!(p["metadata"]["generation"], 1);
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    assert_eq!(p["spec"]["restartPolicy"], "Always");
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    let rv1: u64 = p["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let got = c.get(&format!("{PODS}/p1")).await;
    assert_eq!(got.body, p);

    let dup = c.post(PODS, pod("p1", None)).await;
    assert_eq!(dup.code, 409);
    assert_eq!(dup.body["reason"], "AlreadyExists");
    assert_eq!(dup.body["message"], "pods \"p1\" already exists");
    assert_eq!(dup.body["details"], json!({"name": "p1", "kind": "pods"}));

    let missing = c.get(&format!("{PODS}/nope")).await;
    assert_eq!(missing.code, 404);
    assert_eq!(missing.body["status"], "Failure");
    assert_eq!(missing.body["message"], "pods \"nope\" not found");

    let mut bad = pod("p2", None);
    bad["spec"]["containers"] = json!([]);
    let r = c.post(PODS, bad).await;
    assert_eq!(r.code, 422);
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(
        r.body["message"],
        "Pod \"p2\" is invalid: spec.containers: Required value"
    );
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.containers");

    let r = c.post(PODS, pod("Bad_Name", None)).await;
    assert_eq!(r.code, 422);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("metadata.name: Invalid value: \"Bad_Name\""));

    let r = c
        .post("/api/v1/namespaces/nowhere/pods", pod("p3", None))
        .await;
    assert_eq!(r.code, 404);
    assert_eq!(r.body["message"], "namespaces \"nowhere\" not found");

    c.post(PODS, pod("p2", Some("n2"))).await;
    let list = c.get(PODS).await.body;
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(
        list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv1
    );

    let on_n1 = c
        .get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dn1"))
        .await
        .body;
    assert_eq!(on_n1["items"].as_array().unwrap().len(), 1);
    assert_eq!(on_n1["items"][0]["metadata"]["name"], "p1");
    let by_label = c
        .get("/api/v1/pods?labelSelector=app%20in%20(p2,zzz)")
        .await
        .body;
    assert_eq!(by_label["items"][0]["metadata"]["name"], "p2");
    let bad_field = c.get(&format!("{PODS}?fieldSelector=spec.foo%3Dx")).await;
    assert_eq!(bad_field.code, 400);
    assert_eq!(
        bad_field.body["message"],
        "field label not supported: spec.foo"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn stale_update_is_409_and_status_is_separate() {
    let (s, _dir) = server().await;
    let c = Client::admin(&s);
    let p = c.post(PODS, pod("p", Some("n1"))).await.body;
    let mut upd = p.clone();
    upd["metadata"]["labels"]["x"] = json!("1");
    upd["status"]["phase"] = json!("Running");
    let r = c.put(&format!("{PODS}/p"), upd.clone()).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["labels"]["x"], "1");
    assert_eq!(
        r.body["status"]["phase"], "Pending",
        "the main resource ignores status"
    );
    assert_ne!(
        r.body["metadata"]["resourceVersion"],
        p["metadata"]["resourceVersion"]
    );
    let stale = c.put(&format!("{PODS}/p"), upd).await;
    assert_eq!(stale.code, 409);
    assert_eq!(stale.body["reason"], "Conflict");
    assert_eq!(
        stale.body["message"],
        "Operation cannot be fulfilled on pods \"p\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let mut st = r.body.clone();
    st["status"]["phase"] = json!("Running");
    st["metadata"]["labels"]["y"] = json!("2");
    let r2 = c.put(&format!("{PODS}/p/status"), st).await;
    assert_eq!(r2.code, 200);
    assert_eq!(r2.body["status"]["phase"], "Running");
    assert!(
        r2.body["metadata"]["labels"]["y"].is_null(),
        "status writes touch only status"
    );

    let mut spec_change = r2.body.clone();
    spec_change["spec"]["restartPolicy"] = json!("Never");
    let r3 = c.put(&format!("{PODS}/p"), spec_change).await;
    assert_eq!(r3.code, 422, "pod spec is immutable: {}", r3.body);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn patches_on_pod_status() {
    let (s, _dir) = server().await;
    let c = Client::admin(&s);
    c.post(PODS, pod("p", Some("n1"))).await;
    let path = format!("{PODS}/p/status");
    let r = c
        .patch(
            &path,
            "strategic-merge",
            json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "image": "busybox:1.36", "imageID": "", "state": {"running": {}}}]}}),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    let r = c
        .patch(
            &path,
            "strategic-merge",
            json!({"status": {"$setElementOrder/conditions": [{"type": "Ready"}, {"type": "PodScheduled"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true}]}}),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    let conds = r.body["status"]["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 2);
    assert!(conds.contains(&json!({"type": "Ready", "status": "True"})));
    assert_eq!(r.body["status"]["containerStatuses"][0]["ready"], true);
    assert_eq!(
        r.body["status"]["containerStatuses"][0]["image"],
        "busybox:1.36"
    );

    let r = c
        .patch(
            &path,
            "merge",
            json!({"status": {"podIP": "10.0.0.5"}, "metadata": {"labels": {"z": "1"}}}),
        )
        .await;
    assert_eq!(r.body["status"]["podIP"], "10.0.0.5");
    assert_eq!(r.body["status"]["phase"], "Running");
    assert!(r.body["metadata"]["labels"]["z"].is_null());

    let r = c
        .patch(&path, "json", json!([{"op": "test", "path": "/status/podIP", "value": "10.0.0.5"}, {"op": "replace", "path": "/status/phase", "value": "Succeeded"}]))
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["status"]["phase"], "Succeeded");
    let failed = c
        .patch(
            &path,
            "json",
            json!([{"op": "test", "path": "/status/podIP", "value": "1.1.1.1"}]),
        )
        .await;
    assert_eq!(failed.code, 422);

    // A patch carrying a stale resourceVersion is a conflict.
    let r = c
        .patch(
            &path,
            "merge",
            json!({"metadata": {"resourceVersion": "1"}, "status": {"phase": "Failed"}}),
        )
        .await;
    assert_eq!(r.code, 409);

    // No-op patches do not bump the resourceVersion.
    let before = c.get(&format!("{PODS}/p")).await.body;
    let after = c
        .patch(&path, "merge", json!({"status": {"phase": "Succeeded"}}))
        .await
        .body;
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );

    let r = c
        .call("PATCH", &path, "application/json", Some(json!({})))
        .await;
    assert_eq!(r.code, 415);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn watch_events_in_order_with_bookmarks() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(Options::new(dir.path()).bookmark_interval(Duration::from_millis(300)))
        .await
        .unwrap();
    let c = Client::admin(&s);
    c.post(PODS, pod("before", None)).await;
    // rv=0: synthetic ADDED for what exists, then changes.
    let mut w = c
        .watch(&format!(
            "{PODS}?watch=1&resourceVersion=0&allowWatchBookmarks=true"
        ))
        .await;
    let e = w.next_change(5 * SECOND).await.unwrap();
    assert_eq!(e["type"], "ADDED");
    assert_eq!(e["object"]["metadata"]["name"], "before");
    assert_eq!(e["object"]["kind"], "Pod");

    let created = c.post(PODS, pod("w", Some("n1"))).await.body;
    let rv_created = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    c.patch(
        &format!("{PODS}/w/status"),
        "merge",
        json!({"status": {"phase": "Running"}}),
    )
    .await;
    c.delete(&format!("{PODS}/w"), Some(json!({"gracePeriodSeconds": 0})))
        .await;
    let types: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let e = w.next_change(5 * SECOND).await.unwrap();
            assert_eq!(e["object"]["metadata"]["name"], "w");
            v.push(e["type"].as_str().unwrap().to_string());
        }
        v
    };
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);

    let bm = loop {
        let e = w.next(5 * SECOND).await.unwrap();
        if e["type"] == "BOOKMARK" {
            break e;
        }
    };
    assert_eq!(bm["object"]["kind"], "Pod");
    assert!(
        bm["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= s.resource_version()
    );

    // From a resourceVersion: only what came after it.
    let mut w2 = c
        .watch(&format!("{PODS}?watch=true&resourceVersion={rv_created}"))
        .await;
    assert_eq!(w2.next(5 * SECOND).await.unwrap()["type"], "MODIFIED");
    assert_eq!(w2.next(5 * SECOND).await.unwrap()["type"], "DELETED");

    // Selectors filter watch events; timeoutSeconds ends the stream.
    let mut w3 = c
        .watch(&format!(
            "{PODS}?watch=true&labelSelector=app%3Dsel&timeoutSeconds=1"
        ))
        .await;
    c.post(PODS, pod("other", None)).await;
    c.post(PODS, pod("sel", None)).await;
    let e = w3.next(5 * SECOND).await.unwrap();
    assert_eq!(e["object"]["metadata"]["name"], "sel");
    let start = std::time::Instant::now();
    assert!(w3.next(5 * SECOND).await.is_none());
    assert!(start.elapsed() < Duration::from_secs(3));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn too_old_watch_is_410_expired() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(Options::new(dir.path()).watch_window(3))
        .await
        .unwrap();
    let c = Client::admin(&s);
    let first = c.post(PODS, pod("a", None)).await.body;
    for i in 0..5 {
        c.post(
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("cm{i}")}}),
        )
        .await;
    }
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap();
    let mut w = c
        .watch(&format!("{PODS}?watch=true&resourceVersion={rv}"))
        .await;
    let e = w.next(5 * SECOND).await.unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(w.next(5 * SECOND).await.is_none());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_deletion_then_uid_precondition() {
    let (s, _dir) = server().await;
    let c = Client::admin(&s);
    let mut p = pod("g", Some("n1"));
    p["spec"]["terminationGracePeriodSeconds"] = json!(20);
    let uid = c.post(PODS, p).await.body["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.delete(&format!("{PODS}/g"), None).await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["kind"], "Pod");
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(r.body["metadata"]["deletionGracePeriodSeconds"], 20);
    assert_eq!(
        c.get(&format!("{PODS}/g")).await.code,
        200,
        "still there while terminating"
    );

    let wrong = c
        .delete(
            &format!("{PODS}/g"),
            Some(json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "not-it"}})),
        )
        .await;
    assert_eq!(wrong.code, 409);
    assert!(wrong.body["message"]
        .as_str()
        .unwrap()
        .starts_with("Precondition failed: UID in precondition: not-it"));

    let r = c
        .delete(
            &format!("{PODS}/g"),
            Some(json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(c.get(&format!("{PODS}/g")).await.code, 404);

    // Unbound pods go at once.
    c.post(PODS, pod("u", None)).await;
    c.delete(&format!("{PODS}/u"), None).await;
    assert_eq!(c.get(&format!("{PODS}/u")).await.code, 404);

    // Other kinds answer with a Success Status.
    c.post(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "cm"}, "data": {"a": "b"}}),
    )
    .await;
    let r = c
        .delete("/api/v1/namespaces/default/configmaps/cm", None)
        .await;
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["status"], "Success");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn service_account_admission_and_token_request() {
    let (s, _dir) = server().await;
    let c = Client::admin(&s);
    let p = c.post(PODS, pod("sa", Some("n1"))).await.body;
    let vols = p["spec"]["volumes"].as_array().unwrap();
    let v = vols
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap();
    assert_eq!(
        v["name"].as_str().unwrap().len(),
        "kube-api-access-".len() + 5
    );
    assert_eq!(v["projected"]["defaultMode"], 420);
    assert_eq!(
        v["projected"]["sources"][0]["serviceAccountToken"],
        json!({"expirationSeconds": 3607, "path": "token"})
    );
    assert_eq!(
        v["projected"]["sources"][1]["configMap"]["name"],
        "kube-root-ca.crt"
    );
    let m = &p["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(
        m["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(m["readOnly"], true);

    let mut no_mount = pod("nomount", None);
    no_mount["spec"]["automountServiceAccountToken"] = json!(false);
    let p2 = c.post(PODS, no_mount).await.body;
    assert!(p2["spec"]["volumes"].is_null());

    let mut other_sa = pod("othersa", None);
    other_sa["spec"]["serviceAccountName"] = json!("ghost");
    let r = c.post(PODS, other_sa).await;
    assert_eq!(r.code, 403, "{}", r.body);

    let cm = c
        .get("/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt")
        .await
        .body;
    assert_eq!(cm["data"]["ca.crt"], s.ca_pem());

    let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["api"], "expirationSeconds": 3607,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "sa", "uid": p["metadata"]["uid"]}}});
    let r = c
        .post(
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            req.clone(),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["kind"], "TokenRequest");
    let token = r.body["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3);
    assert!(r.body["status"]["expirationTimestamp"].is_string());

    // The token authenticates (as a service account, which has no rights here).
    let as_sa = Client::new(&s, None).with_token(&token);
    assert_eq!(as_sa.get("/api/v1").await.code, 200);
    let r = as_sa.get(PODS).await;
    assert_eq!(r.code, 403);
    assert_eq!(
        r.body["message"],
        "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );

    let mut bad = req;
    bad["spec"]["boundObjectRef"]["uid"] = json!("other");
    assert_eq!(
        c.post(
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            bad
        )
        .await
        .code,
        409
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn node_authorizer() {
    let (s, _dir) = server().await;
    let admin = Client::admin(&s);
    let n1 = Client::node(&s, "n1");
    assert_eq!(n1.post("/api/v1/nodes", node("n1")).await.code, 201);
    let r = n1.post("/api/v1/nodes", node("n2")).await;
    assert_eq!(r.code, 403);
    assert_eq!(r.body["reason"], "Forbidden");
    admin.post("/api/v1/nodes", node("n2")).await;
    let r = n1
        .patch(
            "/api/v1/nodes/n2/status",
            "strategic-merge",
            json!({"status": {"phase": "x"}}),
        )
        .await;
    assert_eq!(r.code, 403);
    assert_eq!(
        r.body["message"],
        "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope"
    );
    let r = n1
        .patch(
            "/api/v1/nodes/n1/status",
            "strategic-merge",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["status"]["conditions"][0]["status"], "False");

    admin.post(PODS, pod("mine", Some("n1"))).await;
    admin.post(PODS, pod("theirs", Some("n2"))).await;
    let r = n1
        .patch(
            &format!("{PODS}/mine/status"),
            "merge",
            json!({"status": {"phase": "Running"}}),
        )
        .await;
    assert_eq!(r.code, 200);
    let r = n1
        .patch(
            &format!("{PODS}/theirs/status"),
            "merge",
            json!({"status": {"phase": "Running"}}),
        )
        .await;
    assert_eq!(r.code, 403);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("no relationship found between node 'n1' and this object"));
    assert_eq!(
        n1.get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dn1"))
            .await
            .code,
        200
    );
    assert_eq!(n1.delete(&format!("{PODS}/theirs"), None).await.code, 403);
    assert_eq!(
        n1.delete(
            &format!("{PODS}/mine"),
            Some(json!({"gracePeriodSeconds": 0}))
        )
        .await
        .code,
        200
    );

    // Only mirror pods bound to itself.
    assert_eq!(n1.post(PODS, pod("plain", Some("n1"))).await.code, 403);
    let mut mirror = pod("static-n1", Some("n1"));
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
    let r = n1.post(PODS, mirror.clone()).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert!(
        r.body["spec"]["volumes"].is_null(),
        "no token volume in mirror pods"
    );
    mirror["metadata"]["name"] = json!("static-n2");
    mirror["spec"]["nodeName"] = json!("n2");
    assert_eq!(n1.post(PODS, mirror).await.code, 403);

    // Secrets only when a pod on the node uses them.
    admin
        .post(
            "/api/v1/namespaces/default/secrets",
            json!({"metadata": {"name": "used"}, "stringData": {"k": "v"}}),
        )
        .await;
    admin
        .post(
            "/api/v1/namespaces/default/secrets",
            json!({"metadata": {"name": "unused"}, "data": {}}),
        )
        .await;
    let mut user = pod("user", Some("n1"));
    user["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "used"}}]);
    admin.post(PODS, user).await;
    let r = n1.get("/api/v1/namespaces/default/secrets/used").await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["data"]["k"], "dg==");
    assert_eq!(
        n1.get("/api/v1/namespaces/default/secrets/unused")
            .await
            .code,
        403
    );
    assert_eq!(n1.get("/api/v1/namespaces/default/secrets").await.code, 403);
    assert_eq!(
        n1.get("/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dused")
            .await
            .code,
        200
    );

    // Its own Lease only.
    let lease = |n: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n},
        "spec": {"holderIdentity": n, "leaseDurationSeconds": 40}})
    };
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    assert_eq!(n1.post(leases, lease("n1")).await.code, 201);
    assert_eq!(n1.post(leases, lease("n2")).await.code, 403);

    // Events, yes; configmaps writes, no.
    let ev = json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "Starting", "type": "Normal"});
    assert_eq!(
        n1.post("/api/v1/namespaces/default/events", ev).await.code,
        201
    );
    assert_eq!(
        n1.post(
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "x"}})
        )
        .await
        .code,
        403
    );

    // Tokens only for pods bound to itself.
    let uid = admin.get(&format!("{PODS}/user")).await.body["metadata"]["uid"].clone();
    let treq = |p: &str, uid: &Value| {
        json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "spec": {"audiences": [], "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": p, "uid": uid}}})
    };
    assert_eq!(
        n1.post(
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            treq("user", &uid)
        )
        .await
        .code,
        201
    );
    let uid2 = admin.get(&format!("{PODS}/theirs")).await.body["metadata"]["uid"].clone();
    assert_eq!(
        n1.post(
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            treq("theirs", &uid2)
        )
        .await
        .code,
        403
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_objects_and_resource_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(Options::new(dir.path())).await.unwrap();
    let port = s.port;
    let c = Client::admin(&s);
    let p = c.post(PODS, pod("keep", Some("n1"))).await.body;
    let mut w = c.watch(&format!("{PODS}?watch=true")).await;
    assert_eq!(w.next(5 * SECOND).await.unwrap()["type"], "ADDED");
    s.stop().await.unwrap();
    assert!(
        w.next(5 * SECOND).await.is_none(),
        "watches end when the server stops"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "outage"
    );

    let s = start(Options::new(dir.path()).listen(([127, 0, 0, 1], port).into()))
        .await
        .unwrap();
    assert_eq!(s.port, port);
    let c = Client::admin(&s);
    let got = c.get(&format!("{PODS}/keep")).await;
    assert_eq!(got.code, 200);
    assert_eq!(got.body, p);
    let again = c.post(PODS, pod("next", None)).await.body;
    let rv_old: u64 = p["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let rv_new: u64 = again["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_new > rv_old);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn namespace_lifecycle() {
    let (s, _dir) = server().await;
    let c = Client::admin(&s);
    let ns = c
        .post("/api/v1/namespaces", json!({"metadata": {"name": "team"}}))
        .await;
    assert_eq!(ns.code, 201);
    assert_eq!(ns.body["status"]["phase"], "Active");
    assert_eq!(
        c.get("/api/v1/namespaces/team/serviceaccounts/default")
            .await
            .code,
        200
    );
    assert_eq!(
        c.get("/api/v1/namespaces/team/configmaps/kube-root-ca.crt")
            .await
            .code,
        200
    );
    assert_eq!(
        c.post("/api/v1/namespaces/team/pods", pod("x", None))
            .await
            .code,
        201
    );
    assert_eq!(c.delete("/api/v1/namespaces/team", None).await.code, 200);
    assert_eq!(c.get("/api/v1/namespaces/team/pods/x").await.code, 404);
    assert_eq!(c.get("/api/v1/namespaces/team").await.code, 404);
    assert_eq!(c.delete("/api/v1/namespaces/default", None).await.code, 403);
    let bad = c
        .post("/api/v1/namespaces", json!({"metadata": {"name": "a.b"}}))
        .await;
    assert_eq!(bad.code, 422);
    let svc = c
        .get("/api/v1/namespaces/default/services/kubernetes")
        .await
        .body;
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    s.stop().await.unwrap();
}
