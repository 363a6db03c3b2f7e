//! The kubelet's node affinity check: the pod's nodeSelector and its required node affinity
//! (requiredDuringSchedulingIgnoredDuringExecution) against the node's labels and name. A pod
//! bound here (or a static pod) that does not match is refused with `NodeAffinity`.

use super::{predicate_failed, Context, RejectReason, Rejection};
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod};
use std::collections::BTreeMap;

/// The scheduler's description of the failure, which the kubelet puts in its message.
const DESCRIPTION: &str = "node(s) didn't match Pod's node affinity/selector";

/// The rule: every nodeSelector label, and one of the required affinity terms, must match.
pub fn admit(pod: &Pod, ctx: &Context) -> Result<(), Rejection> {
    let node = &ctx.config.node;
    if matches(pod, &node.name, &node.labels) {
        Ok(())
    } else {
        Err(predicate_failed(RejectReason::NodeAffinity, DESCRIPTION))
    }
}

/// True when the pod may run on a node of this name and these labels.
pub fn matches(pod: &Pod, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    // The terms are ORed; no required affinity at all means no constraint.
    selector_ok && required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node_name, labels)))
}

/// A term matches when all its requirements do; an empty term matches no node.
fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let name_field = BTreeMap::from([("metadata.name".to_string(), node_name.to_string())]);
    // Fields: only metadata.name, with In or NotIn.
    let field_ok =
        |r: &NodeSelectorRequirement| r.key == "metadata.name" && matches!(r.operator.as_str(), "In" | "NotIn") && requirement_matches(r, &name_field);
    expressions.iter().all(|r| requirement_matches(r, labels)) && fields.iter().all(field_ok)
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    let as_int = |s: &str| s.parse::<i64>().ok();
    let compare = |ordering: std::cmp::Ordering| match (values, value.and_then(|v| as_int(v))) {
        ([bound], Some(have)) => as_int(bound).is_some_and(|bound| have.cmp(&bound) == ordering),
        _ => false,
    };
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        // An operator the API does not know matches nothing.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::admission::{AdmissionConfig, NodeFacts};
    use crate::pods::manifest::parse_static_pod;

    fn pod(yaml_spec: &str) -> Pod {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\nspec:\n{yaml_spec}  containers: [{{name: c, image: i}}]\n");
        parse_static_pod("f", text.as_bytes(), "n1").unwrap()
    }

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([("disk".to_string(), "ssd".to_string()), ("cores".to_string(), "8".to_string())])
    }

    fn affinity(terms: &str) -> Pod {
        pod(&format!("  affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: {terms}}}}}}}\n"))
    }

    #[test]
    fn node_selector_needs_every_label() {
        assert!(matches(&pod("  nodeSelector: {disk: ssd}\n"), "n1", &labels()));
        assert!(!matches(&pod("  nodeSelector: {disk: ssd, zone: a}\n"), "n1", &labels()));
        assert!(!matches(&pod("  nodeSelector: {disk: hdd}\n"), "n1", &labels()));
    }

    #[test]
    fn required_affinity_terms_are_ored_and_their_expressions_anded() {
        let l = labels();
        assert!(matches(
            &affinity("[{matchExpressions: [{key: disk, operator: In, values: [ssd, nvme]}, {key: cores, operator: Gt, values: ['4']}]}]"),
            "n1",
            &l
        ));
        assert!(!matches(&affinity("[{matchExpressions: [{key: disk, operator: In, values: [ssd]}, {key: cores, operator: Lt, values: ['4']}]}]"), "n1", &l));
        assert!(matches(&affinity("[{matchExpressions: [{key: gpu, operator: Exists}]}, {matchExpressions: [{key: gpu, operator: DoesNotExist}]}]"), "n1", &l));
        assert!(matches(&affinity("[{matchExpressions: [{key: disk, operator: NotIn, values: [hdd]}]}]"), "n1", &l));
        assert!(matches(&affinity("[{matchFields: [{key: metadata.name, operator: In, values: [n1]}]}]"), "n1", &l));
        assert!(!matches(&affinity("[{matchFields: [{key: metadata.name, operator: NotIn, values: [n1]}]}]"), "n1", &l));
        assert!(!matches(&affinity("[{}]"), "n1", &l), "an empty term matches nothing");
        assert!(!matches(&affinity("[]"), "n1", &l));
    }

    #[test]
    fn a_mismatch_is_refused_with_the_kubelets_reason_and_message() {
        let config = AdmissionConfig { node: NodeFacts { name: "n1".into(), labels: labels(), ..Default::default() }, ..Default::default() };
        let ctx = Context { config: &config, admitted: &[] };
        let err = admit(&pod("  nodeSelector: {disk: hdd}\n"), &ctx).unwrap_err();
        assert_eq!(err.reason.as_str(), "NodeAffinity");
        assert_eq!(err.message, "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector");
        assert_eq!(admit(&pod("  nodeSelector: {disk: ssd}\n"), &ctx), Ok(()));
    }
}
