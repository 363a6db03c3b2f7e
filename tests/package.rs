//! The Debian packages (packaging/deb/build.sh) and `make install` (packaging/install.sh), made
//! from the debug binaries in temporary folders. Each package is checked as built (dpkg-deb's
//! fields and files), as its units see it (systemd-analyze verify with --root on a scratch root
//! holding the package's files and the host's own system units), as it runs (the packaged
//! binaries answer --version) and as dpkg installs it: `dpkg --root` into a scratch root with
//! --force-script-chrootless, so the maintainer scripts run here with DPKG_ROOT set and
//! deb-systemd-helper enables the units inside that root, never on the host (checked).
//! Needs root, dpkg-deb, readelf and strip (binutils) and systemd-analyze (package systemd); no
//! running systemd.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Runs a command that must succeed; its stdout.
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

struct Packages {
    _dir: tempfile::TempDir,
    nodelet: PathBuf,
    kubelet: PathBuf,
}

/// Both packages of the debug binaries, uncompressed (the release build is not needed).
fn build_packages() -> Packages {
    let dir = tempfile::Builder::new().prefix("nodelet-package-").tempdir().unwrap();
    let out = dir.path().join("deb");
    let bin_dir = common::cni_plugin_binary().parent().unwrap().to_path_buf();
    let listed =
        run(Command::new("bash").arg(format!("{REPO}/packaging/deb/build.sh")).env("BIN_DIR", &bin_dir).env("OUT_DIR", &out).env("DEB_COMPRESS", "none"));
    let arch = run(Command::new("dpkg").arg("--print-architecture")).trim().to_string();
    let version = env!("CARGO_PKG_VERSION");
    let nodelet = out.join(format!("nodelet_{version}_{arch}.deb"));
    let kubelet = out.join(format!("nodelet-kubelet_{version}_{arch}.deb"));
    assert_eq!(listed.lines().map(PathBuf::from).collect::<Vec<_>>(), [nodelet.clone(), kubelet.clone()]);
    Packages { _dir: dir, nodelet, kubelet }
}

fn field(deb: &Path, name: &str) -> String {
    run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)).trim().to_string()
}

/// A relationship field as its comma-separated items.
fn relations(deb: &Path, name: &str) -> Vec<String> {
    field(deb, name).split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// A scratch root with the package's files and, beside them under /usr/lib/systemd/system, the
/// host's system units (the targets and slices a unit is checked against), ours left out.
fn unit_root(deb: &Path) -> tempfile::TempDir {
    let root = tempfile::Builder::new().prefix("nodelet-package-root-").tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
    let units = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    run(Command::new("cp").arg("-a").arg("/usr/lib/systemd/system/.").arg(&units));
    for entry in std::fs::read_dir(&units).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("nodelet") || name.starts_with("kubelet") {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) }.unwrap();
        }
    }
    root
}

/// `systemd-analyze verify` inside `root`: it must accept the unit and say nothing (it reports
/// unknown keys and bad values as warnings only). Returns the unit as systemd loaded it,
/// drop-ins applied (the dump its debug log holds).
fn verify(root: &Path, unit: &str) -> String {
    let out = output(Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", root.display())).arg(unit).current_dir(root));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify {unit} ({}):\n{stderr}", out.status);
    let out = output(
        Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", root.display())).arg(unit).env("SYSTEMD_LOG_LEVEL", "debug").current_dir(root),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command lines of ExecStart in a loaded unit's dump.
fn exec_starts(dump: &str) -> Vec<String> {
    let mut lines = dump.lines().skip_while(|l| l.trim() != "-> ExecStart:").skip(1);
    let mut out = Vec::new();
    for line in lines.by_ref() {
        match line.trim().strip_prefix("Command Line: ") {
            Some(cmd) => out.push(cmd.replace("\\$", "$").replace('"', "")),
            None if line.trim().starts_with("->") => break,
            None => {}
        }
    }
    out
}

/// `Key=Value` directives of a unit file (or drop-in), in order, with their sections.
fn directives(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{}: {line:?}", path.display()));
            out.push((section.clone(), key.to_string(), value.to_string()));
        }
    }
    out
}

fn values(directives: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    directives.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.clone()).collect()
}

fn one(directives: &[(String, String, String)], section: &str, key: &str) -> String {
    let all = values(directives, section, key);
    assert_eq!(all.len(), 1, "[{section}] {key}: {all:?}");
    all[0].clone()
}

/// `path` inside `root`.
fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn assert_executable(root: &Path, path: &str) {
    let meta = std::fs::metadata(inside(root, path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(meta.is_file() && meta.permissions().mode() & 0o111 != 0, "{path} is not an executable file");
}

fn assert_dirs(root: &Path, dirs: &[&str]) {
    for dir in dirs {
        assert!(inside(root, dir).is_dir(), "{dir} is not shipped");
    }
}

/// The unit's binary exists and is executable, the CNI plugin is beside it (nodelet's default
/// --cni-plugin) and linked from /opt/cni/bin, and the binary answers as the kubelet does.
fn assert_runs(root: &Path, exec_start: &str) {
    let binary = exec_start.split_whitespace().next().unwrap();
    assert_executable(root, binary);
    let plugin = Path::new(binary).with_file_name("nodelet-cni");
    assert_executable(root, plugin.to_str().unwrap());
    assert_eq!(std::fs::read_link(inside(root, "/opt/cni/bin/nodelet-cni")).unwrap(), plugin);
    let version = run(Command::new(inside(root, binary)).arg("--version"));
    assert!(version.starts_with("Kubernetes v1.35"), "{binary} --version: {version}");
}

/// Every file under /etc is a conffile; the control archive holds the maintainer scripts.
fn assert_conffiles(deb: &Path, root: &Path, expected: &[&str]) {
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(control.path()));
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), expected);
    let under_etc = run(Command::new("find").arg("etc").args(["-type", "f"]).current_dir(root));
    let mut under_etc: Vec<String> = under_etc.lines().map(|l| format!("/{l}")).collect();
    under_etc.sort();
    assert_eq!(under_etc, expected);
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(control.path().join(script)).unwrap();
        assert!(!text.contains("#UNIT#") && !text.contains("#PACKAGE#"), "{script}:\n{text}");
    }
}

fn assert_common_fields(deb: &Path, package: &str) {
    assert_eq!(field(deb, "Package"), package);
    assert_eq!(field(deb, "Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!((field(deb, "Section"), field(deb, "Priority")), ("admin".into(), "optional".into()));
    assert!(!field(deb, "Maintainer").is_empty() && !field(deb, "Description").is_empty());
    let depends = relations(deb, "Depends");
    for needed in ["containerd | containerd.io", "containernetworking-plugins | kubernetes-cni", "nftables", "libnftables1", "conntrack"] {
        assert!(depends.iter().any(|d| d == needed), "{package}: Depends {depends:?} lacks {needed}");
    }
    assert!(depends.iter().any(|d| d.starts_with("libc6 (>= 2.")), "{package}: Depends {depends:?}");
}

#[test]
fn the_nodelet_package_runs_nodelet_as_its_own_service() {
    let packages = build_packages();
    let deb = &packages.nodelet;
    assert_common_fields(deb, "nodelet");
    assert_eq!(relations(deb, "Conflicts"), ["nodelet-kubelet"]);
    assert_eq!(relations(deb, "Replaces"), ["nodelet-kubelet"]);

    let root = unit_root(deb);
    let root = root.path();
    let unit = directives(&inside(root, "/lib/systemd/system/nodelet.service"));
    let exec_start = one(&unit, "Service", "ExecStart");
    assert_eq!(exec_start, "/usr/bin/nodelet --config /etc/nodelet/config.yaml $NODELET_ARGS");
    assert!(inside(root, "/etc/nodelet/config.yaml").is_file());
    assert_eq!(one(&unit, "Service", "EnvironmentFile"), "-/etc/default/nodelet");
    assert!(inside(root, "/etc/default/nodelet").is_file());
    for (section, key, value) in [
        ("Service", "Restart", "always"),
        ("Service", "KillMode", "process"),
        ("Unit", "StartLimitIntervalSec", "0"),
        ("Unit", "Wants", "network-online.target"),
        ("Unit", "After", "network-online.target containerd.service"),
        ("Install", "WantedBy", "multi-user.target"),
    ] {
        assert_eq!(one(&unit, section, key), value, "[{section}] {key}");
    }
    let loaded = verify(root, "nodelet.service");
    assert_eq!(exec_starts(&loaded), [exec_start.as_str()], "{loaded}");
    assert!(loaded.contains("KillMode: process"), "{loaded}");
    assert_runs(root, &exec_start);
    assert_dirs(root, &["/etc/cni/net.d", "/var/lib/nodelet", "/var/log/pods"]);
    assert_conffiles(deb, root, &["/etc/default/nodelet", "/etc/nodelet/config.yaml"]);
    assert_eq!(std::fs::read(inside(root, "/etc/nodelet/config.yaml")).unwrap(), std::fs::read(format!("{REPO}/packaging/config.yaml")).unwrap());
    drop(packages);
}

#[test]
fn the_nodelet_kubelet_package_takes_the_kubelets_place_for_kubeadm() {
    let packages = build_packages();
    let deb = &packages.kubelet;
    assert_common_fields(deb, "nodelet-kubelet");
    let kubernetes = nodelet::version::KUBERNETES.trim_start_matches('v');
    assert_eq!(relations(deb, "Provides"), [format!("kubelet (= {kubernetes})")]);
    assert_eq!(relations(deb, "Conflicts"), ["kubelet", "nodelet"]);
    assert_eq!(relations(deb, "Replaces"), ["kubelet", "nodelet"]);

    let root = unit_root(deb);
    let root = root.path();
    let unit = directives(&inside(root, "/lib/systemd/system/kubelet.service"));
    // the official kubelet package's unit, plus KillMode=process
    for (section, key, value) in [
        ("Service", "ExecStart", "/usr/bin/kubelet"),
        ("Service", "Restart", "always"),
        ("Service", "StartLimitInterval", "0"),
        ("Service", "RestartSec", "10"),
        ("Service", "KillMode", "process"),
        ("Unit", "Wants", "network-online.target"),
        ("Install", "WantedBy", "multi-user.target"),
    ] {
        assert_eq!(one(&unit, section, key), value, "[{section}] {key}");
    }
    assert!(one(&unit, "Unit", "After").split_whitespace().any(|u| u == "network-online.target"));
    assert_runs(root, "/usr/bin/kubelet");
    assert!(!inside(root, "/usr/bin/nodelet").exists());

    // kubeadm's drop-in, under a name of its own: its environment files are optional or shipped
    let drop_in = directives(&inside(root, "/lib/systemd/system/kubelet.service.d/09-nodelet-kubeadm.conf"));
    for file in values(&drop_in, "Service", "EnvironmentFile") {
        assert!(file.starts_with('-') || inside(root, &file).is_file(), "EnvironmentFile={file} is neither optional nor shipped");
    }
    assert!(inside(root, "/etc/default/kubelet").is_file());
    let kubeadm_exec_start = "/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS";
    assert_eq!(values(&drop_in, "Service", "ExecStart"), ["", kubeadm_exec_start]);
    let loaded = verify(root, "kubelet.service");
    assert_eq!(exec_starts(&loaded), [kubeadm_exec_start], "{loaded}");
    assert!(loaded.contains("KillMode: process"), "{loaded}");

    // With the kubeadm package's own drop-in beside it, the unit still runs one command.
    let kubeadm = inside(root, "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf");
    std::fs::create_dir_all(kubeadm.parent().unwrap()).unwrap();
    std::fs::copy(inside(root, "/lib/systemd/system/kubelet.service.d/09-nodelet-kubeadm.conf"), &kubeadm).unwrap();
    assert_eq!(exec_starts(&verify(root, "kubelet.service")), [kubeadm_exec_start]);

    assert_dirs(root, &["/etc/cni/net.d", "/var/lib/kubelet", "/var/log/pods", "/etc/kubernetes/manifests"]);
    assert_conffiles(deb, root, &["/etc/default/kubelet"]);
    drop(packages);
}

/// What an install on the host itself would change: the units' enablement and masks, dpkg's
/// record of the packages, the loopback plugin's link.
fn host_state() -> Vec<String> {
    let mut state = Vec::new();
    for unit in ["nodelet.service", "kubelet.service"] {
        for path in [
            format!("/etc/systemd/system/multi-user.target.wants/{unit}"),
            format!("/etc/systemd/system/{unit}"),
            format!("/var/lib/systemd/deb-systemd-helper-enabled/{unit}.dsh-also"),
            format!("/var/lib/systemd/deb-systemd-helper-masked/{unit}"),
        ] {
            state.push(format!("{path}: {:?}", std::fs::symlink_metadata(&path).map(|m| m.len()).ok()));
        }
    }
    state.push(format!("/opt/cni/bin/loopback: {:?}", std::fs::read_link("/opt/cni/bin/loopback").ok()));
    let out = output(Command::new("dpkg-query").args(["-W", "-f", "${Package} ${Status}\n", "nodelet", "nodelet-kubelet"]));
    state.push(String::from_utf8_lossy(&out.stdout).into_owned());
    state
}

/// dpkg on the scratch root `root`; its maintainer scripts run here with DPKG_ROOT=root. The
/// dependencies are not installed there.
fn dpkg(root: &Path, args: &[&str]) -> String {
    run(Command::new("dpkg").arg(format!("--root={}", root.display())).args(["--force-script-chrootless", "--force-depends"]).args(args))
}

fn status(root: &Path, package: &str) -> String {
    let admindir = inside(root, "/var/lib/dpkg");
    let out = output(Command::new("dpkg-query").arg(format!("--admindir={}", admindir.display())).args(["-W", "-f", "${Status}", package]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link(root: &Path, path: &str) -> Option<PathBuf> {
    std::fs::read_link(inside(root, path)).ok()
}

#[test]
fn dpkg_installs_enables_switches_and_purges_in_a_scratch_root_not_on_the_host() {
    let packages = build_packages();
    let before = host_state();
    let scratch = tempfile::Builder::new().prefix("nodelet-dpkg-root-").tempdir().unwrap();
    let root = scratch.path();
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(inside(root, &format!("/var/lib/dpkg/{dir}"))).unwrap();
    }
    std::fs::write(inside(root, "/var/lib/dpkg/status"), "").unwrap();
    // the loopback plugin as Debian's containernetworking-plugins installs it
    std::fs::create_dir_all(inside(root, "/usr/lib/cni")).unwrap();
    std::fs::write(inside(root, "/usr/lib/cni/loopback"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(inside(root, "/usr/lib/cni/loopback"), std::fs::Permissions::from_mode(0o755)).unwrap();

    dpkg(root, &["-i", packages.nodelet.to_str().unwrap()]);
    assert_eq!(status(root, "nodelet"), "install ok installed");
    assert_eq!(link(root, "/etc/systemd/system/multi-user.target.wants/nodelet.service"), Some("/lib/systemd/system/nodelet.service".into()));
    assert_eq!(link(root, "/opt/cni/bin/loopback"), Some("/usr/lib/cni/loopback".into()));
    assert_eq!(dpkg(root, &["--verify", "nodelet"]), "", "files differ from the package's md5sums");

    // an upgrade (the same package again) keeps the admin's edits of a conffile
    let config = inside(root, "/etc/nodelet/config.yaml");
    let edited = std::fs::read_to_string(&config).unwrap() + "#maxPods: 50\n";
    std::fs::write(&config, &edited).unwrap();
    dpkg(root, &["-i", packages.nodelet.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // nodelet-kubelet replaces nodelet (Conflicts and Replaces): one node agent per machine
    dpkg(root, &["-i", packages.kubelet.to_str().unwrap()]);
    assert_eq!((status(root, "nodelet"), status(root, "nodelet-kubelet")), ("install ok config-files".into(), "install ok installed".into()));
    assert!(!inside(root, "/usr/bin/nodelet").exists() && inside(root, "/usr/bin/kubelet").is_file() && inside(root, "/usr/bin/nodelet-cni").is_file());
    assert_eq!(link(root, "/etc/systemd/system/multi-user.target.wants/kubelet.service"), Some("/lib/systemd/system/kubelet.service".into()));
    assert_eq!(link(root, "/opt/cni/bin/nodelet-cni"), Some("/usr/bin/nodelet-cni".into()));

    // purged, each leaves neither its files nor its units' enablement
    dpkg(root, &["--purge", "nodelet", "nodelet-kubelet"]);
    assert_eq!((status(root, "nodelet"), status(root, "nodelet-kubelet")), (String::new(), String::new()));
    for gone in [
        "/etc/nodelet",
        "/etc/default/nodelet",
        "/etc/default/kubelet",
        "/usr/bin/kubelet",
        "/usr/bin/nodelet-cni",
        "/opt/cni/bin/nodelet-cni",
        "/lib/systemd/system/kubelet.service",
        "/etc/systemd/system/multi-user.target.wants/nodelet.service",
        "/etc/systemd/system/multi-user.target.wants/kubelet.service",
        "/etc/systemd/system/nodelet.service",
    ] {
        assert!(std::fs::symlink_metadata(inside(root, gone)).is_err(), "{gone} is left after the purge");
    }
    assert_eq!(host_state(), before, "installing into the scratch root changed the host");
}

/// The files under `root`, as paths from it, with what a symlink points to.
fn tree(root: &Path) -> Vec<String> {
    let listing = run(Command::new("find").arg(".").args(["-mindepth", "1", "-printf", "/%P %y %l\n"]).current_dir(root));
    let mut lines: Vec<String> = listing.lines().map(|l| l.trim_end().to_string()).collect();
    lines.sort();
    lines
}

/// `make install` of the debug binaries into `destdir`, with PREFIX and UNITDIR when given.
fn make_install(destdir: &Path, dirs: Option<(&str, &str)>) -> String {
    let bin_dir = common::cni_plugin_binary().parent().unwrap().to_path_buf();
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(REPO)
        .arg("--no-print-directory")
        .arg("install")
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("BIN_DIR={}", bin_dir.display()));
    if let Some((prefix, unit_dir)) = dirs {
        cmd.arg(format!("UNITDIR={unit_dir}"));
        cmd.arg(format!("PREFIX={prefix}"));
    }
    run(&mut cmd)
}

#[test]
fn make_install_lays_out_the_nodelet_package_files_and_keeps_the_admins_config() {
    let packages = build_packages();
    let package = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&packages.nodelet).arg(package.path()));
    std::fs::remove_dir_all(package.path().join("usr/share")).unwrap(); // Debian's copyright file

    // With the packages' prefix, the same files (the binaries unstripped).
    let installed = tempfile::tempdir().unwrap();
    let out = make_install(installed.path(), Some(("/usr", "/lib/systemd/system")));
    assert!(out.contains("systemctl daemon-reload && systemctl enable --now nodelet"), "{out}");
    assert_eq!(tree(installed.path()), tree(package.path()));
    for file in ["/lib/systemd/system/nodelet.service", "/etc/nodelet/config.yaml", "/etc/default/nodelet"] {
        assert_eq!(std::fs::read(inside(installed.path(), file)).unwrap(), std::fs::read(inside(package.path(), file)).unwrap(), "{file}");
    }

    // The default prefix, /usr/local: the unit runs the binary there, and systemd accepts it.
    let local = tempfile::tempdir().unwrap();
    make_install(local.path(), None);
    let unit = directives(&inside(local.path(), "/usr/local/lib/systemd/system/nodelet.service"));
    let exec_start = one(&unit, "Service", "ExecStart");
    assert_eq!(exec_start, "/usr/local/bin/nodelet --config /etc/nodelet/config.yaml $NODELET_ARGS");
    assert_runs(local.path(), &exec_start);
    let units = inside(local.path(), "/usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    run(Command::new("cp").arg("-a").arg("/usr/lib/systemd/system/.").arg(&units));
    let _ = std::fs::remove_file(units.join("nodelet.service"));
    assert_eq!(exec_starts(&verify(local.path(), "nodelet.service")), [exec_start]);

    // Installed again: the admin's config files stay as they are.
    let config = inside(local.path(), "/etc/nodelet/config.yaml");
    let defaults = inside(local.path(), "/etc/default/nodelet");
    std::fs::write(&config, "kind: KubeletConfiguration\nmaxPods: 50\n").unwrap();
    std::fs::write(&defaults, "NODELET_ARGS=--node-ip=192.0.2.10\n").unwrap();
    let out = make_install(local.path(), None);
    assert!(out.contains("kept the existing"), "{out}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "kind: KubeletConfiguration\nmaxPods: 50\n");
    assert_eq!(std::fs::read_to_string(&defaults).unwrap(), "NODELET_ARGS=--node-ip=192.0.2.10\n");
    drop(packages);
}
