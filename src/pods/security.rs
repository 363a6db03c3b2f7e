//! A container's effective security settings, as the kubelet derives them from the pod's and the
//! container's securityContext: the seccomp profile handed to CRI, the runAsNonRoot check made
//! before a container is created, and whether the sandbox must be privileged. Pure.

use k8s_cri::v1 as cri;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, SeccompProfile};
use std::path::Path;

/// How the seccomp profile is chosen: `root` is the kubelet's `<root-dir>/seccomp`, against which
/// Localhost profiles are resolved; `default_runtime` is SeccompDefault (RuntimeDefault when unset).
#[derive(Debug, Clone)]
pub struct SeccompSettings<'a> {
    pub root: &'a Path,
    pub default_runtime: bool,
}

/// The profile of a container (its own field over the pod's), or of the sandbox (`container` None).
/// Unset everywhere: Unconfined, or RuntimeDefault with SeccompDefault, as the kubelet does.
pub fn seccomp_profile(settings: &SeccompSettings, pod: &PodSpec, container: Option<&Container>) -> Result<cri::SecurityProfile, String> {
    let own = container.and_then(|c| c.security_context.as_ref()).and_then(|sc| sc.seccomp_profile.as_ref());
    let pod_level = pod.security_context.as_ref().and_then(|sc| sc.seccomp_profile.as_ref());
    let profile = |kind: ProfileType, localhost_ref: String| cri::SecurityProfile { profile_type: kind as i32, localhost_ref };
    let Some(field) = own.or(pod_level) else {
        return Ok(profile(if settings.default_runtime { ProfileType::RuntimeDefault } else { ProfileType::Unconfined }, String::new()));
    };
    Ok(match field.type_.as_str() {
        "RuntimeDefault" => profile(ProfileType::RuntimeDefault, String::new()),
        "Localhost" => profile(ProfileType::Localhost, localhost_path(settings.root, field)?),
        // Unconfined, and any type this version does not know, as the kubelet treats them.
        _ => profile(ProfileType::Unconfined, String::new()),
    })
}

/// A Localhost profile's file under the seccomp root; the API allows only a descending relative path.
fn localhost_path(root: &Path, field: &SeccompProfile) -> Result<String, String> {
    let name = field.localhost_profile.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err("seccompProfile: localhostProfile must be set if seccompProfile type is Localhost".into());
    }
    if name.starts_with('/') || name.split('/').any(|part| part == "..") {
        return Err(format!("seccompProfile: localhostProfile {name:?} must be a relative path under {} without '..'", root.display()));
    }
    Ok(root.join(name).to_string_lossy().into_owned())
}

/// The user an image runs as, from CRI's ImageStatus, as the kubelet reads it: the numeric uid
/// when the image has one, else its user name; an image that says neither runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    Uid(i64),
    Name(String),
}

impl ImageUser {
    pub fn of(image: Option<&cri::Image>) -> ImageUser {
        match image {
            Some(cri::Image { uid: Some(uid), .. }) => ImageUser::Uid(uid.value),
            Some(image) if !image.username.is_empty() => ImageUser::Name(image.username.clone()),
            _ => ImageUser::Uid(0),
        }
    }
}

/// runAsNonRoot and runAsUser as they apply to this container (its own over the pod's).
fn effective_user_settings(pod: &Pod, c: &Container) -> (bool, Option<i64>) {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let non_root = sc.and_then(|s| s.run_as_non_root).or(pod_sc.and_then(|s| s.run_as_non_root)).unwrap_or(false);
    let user = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user));
    (non_root, user)
}

/// True when the runAsNonRoot check needs the image's user (no runAsUser decides it).
pub fn needs_image_user(pod: &Pod, c: &Container) -> bool {
    matches!(effective_user_settings(pod, c), (true, None))
}

/// The kubelet's runAsNonRoot check, with its messages: runAsUser 0 is refused; without
/// runAsUser, an image running as uid 0 (or saying nothing) or under a user name is refused.
/// `image` is only consulted when `needs_image_user`.
pub fn verify_run_as_non_root(pod: &Pod, c: &Container, image: &ImageUser) -> Result<(), String> {
    let pod_desc = format!("{}_{}({})", super::spec::pod_name(pod), super::spec::pod_namespace(pod), super::spec::pod_uid(pod));
    match effective_user_settings(pod, c) {
        (false, _) => Ok(()),
        (true, Some(0)) => Err(format!("container's runAsUser breaks non-root policy (pod: {pod_desc:?}, container: {})", c.name)),
        (true, Some(_)) => Ok(()),
        (true, None) => match image {
            ImageUser::Name(name) => Err(format!(
                "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root (pod: {pod_desc:?}, container: {})",
                c.name
            )),
            ImageUser::Uid(0) => Err(format!("container has runAsNonRoot and image will run as root (pod: {pod_desc:?}, container: {})", c.name)),
            ImageUser::Uid(uid) if !(0..=i64::from(i32::MAX)).contains(uid) => Err(format!(
                "container has runAsNonRoot and image has an invalid user id ({uid}). (Must be 1-({})): must be between 0 and {}, inclusive (pod: {pod_desc:?}, container: {})",
                i32::MAX,
                i32::MAX,
                c.name
            )),
            ImageUser::Uid(_) => Ok(()),
        },
    }
}

/// A sandbox holding a privileged container must be privileged itself (containerd refuses
/// "no privileged container allowed in sandbox" otherwise), as the kubelet sets it.
pub fn has_privileged_container(spec: &PodSpec) -> bool {
    let privileged = |sc: Option<&k8s_openapi::api::core::v1::SecurityContext>| sc.and_then(|s| s.privileged).unwrap_or(false);
    spec.init_containers.iter().flatten().chain(spec.containers.iter()).any(|c| privileged(c.security_context.as_ref()))
        || spec.ephemeral_containers.iter().flatten().any(|c| privileged(c.security_context.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::manifest::parse_static_pod;

    fn pod(yaml_spec: &str) -> Pod {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\nspec:\n{yaml_spec}");
        parse_static_pod("f", text.as_bytes(), "n1").unwrap()
    }

    fn settings(default_runtime: bool) -> SeccompSettings<'static> {
        SeccompSettings { root: Path::new("/var/lib/nodelet/seccomp"), default_runtime }
    }

    fn kind(p: &cri::SecurityProfile) -> ProfileType {
        ProfileType::try_from(p.profile_type).unwrap()
    }

    #[test]
    fn seccomp_container_over_pod_and_the_default() {
        let p = pod("  securityContext: {seccompProfile: {type: RuntimeDefault}}\n  containers:\n  - {name: a, image: i}\n  - {name: b, image: i, securityContext: {seccompProfile: {type: Unconfined}}}\n");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(kind(&seccomp_profile(&settings(false), spec, Some(&spec.containers[0])).unwrap()), ProfileType::RuntimeDefault);
        assert_eq!(kind(&seccomp_profile(&settings(false), spec, Some(&spec.containers[1])).unwrap()), ProfileType::Unconfined);
        assert_eq!(kind(&seccomp_profile(&settings(false), spec, None).unwrap()), ProfileType::RuntimeDefault);
        let bare = pod("  containers: [{name: a, image: i}]\n");
        let spec = bare.spec.as_ref().unwrap();
        assert_eq!(kind(&seccomp_profile(&settings(false), spec, Some(&spec.containers[0])).unwrap()), ProfileType::Unconfined);
        assert_eq!(kind(&seccomp_profile(&settings(true), spec, Some(&spec.containers[0])).unwrap()), ProfileType::RuntimeDefault);
        assert_eq!(kind(&seccomp_profile(&settings(true), spec, None).unwrap()), ProfileType::RuntimeDefault);
    }

    #[test]
    fn localhost_profiles_resolve_under_the_seccomp_root() {
        let p = pod("  containers:\n  - {name: a, image: i, securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/audit.json}}}\n  - {name: b, image: i, securityContext: {seccompProfile: {type: Localhost}}}\n  - {name: c, image: i, securityContext: {seccompProfile: {type: Localhost, localhostProfile: ../etc/x.json}}}\n");
        let spec = p.spec.as_ref().unwrap();
        let a = seccomp_profile(&settings(false), spec, Some(&spec.containers[0])).unwrap();
        assert_eq!((kind(&a), a.localhost_ref.as_str()), (ProfileType::Localhost, "/var/lib/nodelet/seccomp/profiles/audit.json"));
        let err = seccomp_profile(&settings(false), spec, Some(&spec.containers[1])).unwrap_err();
        assert!(err.contains("localhostProfile must be set"), "{err}");
        let err = seccomp_profile(&settings(false), spec, Some(&spec.containers[2])).unwrap_err();
        assert!(err.contains("../etc/x.json"), "{err}");
    }

    #[test]
    fn image_user_as_the_kubelet_reads_it() {
        let image = |uid: Option<i64>, name: &str| cri::Image { uid: uid.map(|value| cri::Int64Value { value }), username: name.into(), ..Default::default() };
        assert_eq!(ImageUser::of(Some(&image(Some(1000), "app"))), ImageUser::Uid(1000));
        assert_eq!(ImageUser::of(Some(&image(None, "app"))), ImageUser::Name("app".into()));
        assert_eq!(ImageUser::of(Some(&image(None, ""))), ImageUser::Uid(0));
        assert_eq!(ImageUser::of(None), ImageUser::Uid(0));
    }

    #[test]
    fn run_as_non_root_refusals_carry_the_kubelets_messages() {
        let p = pod("  securityContext: {runAsNonRoot: true}\n  containers:\n  - {name: a, image: i}\n  - {name: b, image: i, securityContext: {runAsUser: 0}}\n  - {name: c, image: i, securityContext: {runAsUser: 1000}}\n  - {name: d, image: i, securityContext: {runAsNonRoot: false}}\n");
        let cs = &p.spec.as_ref().unwrap().containers;
        let desc = format!("p-n1_ns({})", p.metadata.uid.as_deref().unwrap());
        assert!(needs_image_user(&p, &cs[0]) && !needs_image_user(&p, &cs[1]) && !needs_image_user(&p, &cs[2]) && !needs_image_user(&p, &cs[3]));
        assert_eq!(
            verify_run_as_non_root(&p, &cs[0], &ImageUser::Uid(0)).unwrap_err(),
            format!("container has runAsNonRoot and image will run as root (pod: {desc:?}, container: a)")
        );
        assert_eq!(
            verify_run_as_non_root(&p, &cs[0], &ImageUser::Name("app".into())).unwrap_err(),
            format!("container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: {desc:?}, container: a)")
        );
        assert!(verify_run_as_non_root(&p, &cs[0], &ImageUser::Uid(-1)).unwrap_err().contains("invalid user id (-1)"));
        assert_eq!(verify_run_as_non_root(&p, &cs[0], &ImageUser::Uid(1000)), Ok(()));
        assert_eq!(
            verify_run_as_non_root(&p, &cs[1], &ImageUser::Uid(1000)).unwrap_err(),
            format!("container's runAsUser breaks non-root policy (pod: {desc:?}, container: b)")
        );
        assert_eq!(verify_run_as_non_root(&p, &cs[2], &ImageUser::Uid(0)), Ok(()));
        assert_eq!(verify_run_as_non_root(&p, &cs[3], &ImageUser::Uid(0)), Ok(()));
    }

    #[test]
    fn any_privileged_container_makes_the_sandbox_privileged() {
        assert!(!has_privileged_container(pod("  containers: [{name: a, image: i, securityContext: {privileged: false}}]\n").spec.as_ref().unwrap()));
        assert!(has_privileged_container(
            pod("  containers: [{name: a, image: i}, {name: b, image: i, securityContext: {privileged: true}}]\n").spec.as_ref().unwrap()
        ));
        assert!(has_privileged_container(
            pod("  initContainers: [{name: i, image: i, securityContext: {privileged: true}}]\n  containers: [{name: a, image: i}]\n").spec.as_ref().unwrap()
        ));
    }
}
