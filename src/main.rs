//! nodelet: a Kubernetes node agent. This file only wires the parts together.

use clap::Parser;
use nodelet::config::{Config, Flags, NetworkPlugin};
use nodelet::health::{self, Health};
use nodelet::pod_network::PodNetwork;
use nodelet::pods::manager::Manager;
use nodelet::pods::source::ManifestDir;
use nodelet::pods::spec::NodeContext;
use nodelet::pods::store::PodStore;
use nodelet::pods::worker::WorkerDeps;
use nodelet::{machine, network, node, nodeip, runtime, server};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    match flags.version.as_deref() {
        None | Some("false") => {}
        Some("raw") => {
            print!("{}", nodelet::version::raw());
            return std::process::ExitCode::SUCCESS;
        }
        Some(_) => {
            println!("{}", nodelet::version::line());
            return std::process::ExitCode::SUCCESS;
        }
    }
    let config = match Config::from_flags(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nodelet: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let level = match config.verbosity {
        0..=3 => "info",
        4..=5 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into())).init();
    nodelet::config::warn_about_file(&config);
    nodelet::heap::configure();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("nodelet stopped: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(node = %config.node_name, "nodelet starting");
    tokio::spawn(nodelet::heap::run());
    let facts = machine::read_host_facts(Path::new("/"))?;
    let host_ip = config.node_ip.or_else(nodeip::default_route_ipv4).map(|ip| ip.to_string());
    let ctx = Arc::new(NodeContext {
        node_name: config.node_name.clone(),
        cgroups: nodelet::cgroups::Layout::new(config.cgroup_driver, &config.cgroup_root),
        pod_pids_limit: config.pod_pids_limit,
        pod_log_root: config.pod_logs_dir.clone(),
        pod_data_root: config.root_dir.join("pods"),
        cluster_dns: config.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
        cluster_domain: config.cluster_domain.clone(),
        host_resolv_conf: nodelet::config::host_resolv_conf(config.resolv_conf.as_deref()),
        host_ip,
        memory_capacity: facts.machine.memory_capacity as i64,
        allocatable: nodelet::podinfo::downward::Allocatable::from_capacity(
            facts.machine.num_cores,
            facts.machine.memory_capacity as i64,
            config.reserved.0,
            config.reserved.1,
            nix::sys::statvfs::statvfs(&config.root_dir).map(|s| (s.blocks() * s.fragment_size()) as i64).unwrap_or(0),
        ),
        seccomp_root: config.root_dir.join("seccomp"),
        seccomp_default: config.seccomp_default,
    });
    std::fs::create_dir_all(&ctx.pod_data_root)?;
    // A cgroup setup nodelet cannot drive stops it before it serves anything.
    let cgroups = match config.proxy_only {
        false => Some(pod_cgroups(&config, &facts).await?),
        true => None,
    };

    let health = Arc::new(Health::new(Duration::from_secs(30).max(config.file_check_frequency * 10)));
    if !config.proxy_only {
        // Unhealthy until the runtime has answered, even if /healthz is asked first.
        health.set("runtime", Err("not checked yet".into()));
    }
    // What answers while nodelet still waits for its credentials (a TLS bootstrap): kubeadm polls
    // the health endpoint before it waits for the bootstrap.
    if config.healthz.port() != 0 {
        let listener = server::bind(config.healthz, "--healthz-port/--healthz-bind-address").await?;
        tokio::spawn(nodelet::serving::log_failure("health endpoint", server::serve_health(listener, health.clone())));
    }
    let store = PodStore::default();
    // the one runtime client (it connects on first use), shared by every part
    let cri = runtime::Cri::new(&config.runtime_socket);
    let stats = (!config.proxy_only).then(|| Arc::new(nodelet::stats::Collector::new(cri.clone(), store.clone(), ctx.clone(), config.root_dir.clone())));
    let eviction_stats = stats.clone();
    let server_state =
        server::ReadOnly { health: health.clone(), pods: store.clone(), host_root: "/".into(), configz: Arc::new(nodelet::configz::configz(&config)), stats };
    if config.read_only_port != 0 {
        let listener = server::bind(SocketAddr::new(config.address, config.read_only_port), "--read-only-port").await?;
        tokio::spawn(nodelet::serving::log_failure("read-only server", server::serve(listener, server_state.clone())));
    }
    let credentials = match &config.kubeconfig {
        Some(path) => Some(node_credentials(&config, path).await?),
        None => None,
    };
    let client = credentials.as_ref().map(|c| c.client.clone());
    let events = match &client {
        Some(client) => nodelet::events::Recorder::to_apiserver(client.clone(), config.node_name.clone()),
        None => nodelet::events::Recorder::log_only(),
    };
    // The proxy lists Services and EndpointSlices of every namespace, the routes between nodes
    // the Nodes: with kube-proxy's identity when given one, as a node's credentials may not.
    let cluster_client = match (&config.proxy_kubeconfig, &client) {
        (Some(path), Some(_)) => Some(kube_client("--proxy-kubeconfig", path).await?),
        (_, client) => client.clone(),
    };
    let proxiers = match (config.proxy_enabled, &cluster_client) {
        (true, Some(proxy_client)) => start_proxy(proxy_client.clone(), &config, health.clone())?,
        _ => Vec::new(),
    };
    if config.port != 0 && !config.proxy_only {
        let settings = nodelet::secure::SecureSettings {
            addr: SocketAddr::new(config.address, config.port),
            node_name: config.node_name.clone(),
            node_ips: ctx.host_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
            cert_dir: config.cert_dir.clone(),
            tls_cert_file: config.tls_cert_file.clone(),
            tls_key_file: config.tls_private_key_file.clone(),
            client_ca_file: config.client_ca_file.clone(),
            anonymous: config.anonymous_auth,
            authentication_webhook: config.authentication_token_webhook,
            authorization_mode: if config.authorization_webhook {
                nodelet::secure::AuthorizationMode::Webhook
            } else {
                nodelet::secure::AuthorizationMode::AlwaysAllow
            },
            cache_ttls: config.auth_cache,
            pod_logs_dir: config.pod_logs_dir.clone(),
            cri: Some(cri.clone()),
        };
        let secure = nodelet::secure::bind(settings, server_state, client.clone()).await?;
        if let (true, Some(client)) = (config.server_tls_bootstrap, &client) {
            serve_certificate_from_cluster(&config, client.clone(), secure.serving_identity(), ctx.host_ip.as_deref(), events.clone());
        }
        tokio::spawn(nodelet::serving::log_failure("secure server", secure.run()));
    }
    if config.proxy_only {
        tracing::info!("running the Service proxy only");
        loop {
            health.sync_loop_ran();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown_signal() => return Ok(()),
            }
        }
    }

    // the IPv4 proxy's masquerade rules name the pod CIDR, so they follow it
    let v4_proxiers = proxiers.into_iter().filter(|p| p.config().family == nodelet::proxy::model::Family::V4).collect();
    let assigned_cidrs = client.as_ref().map(|client| node::pod_cidr::assigned_pod_cidrs(client.clone(), &config.node_name));
    let network_gate = match config.network_plugin {
        NetworkPlugin::Nodelet => {
            let install = network::CniInstall {
                conf_dir: config.cni_conf_dir.clone(),
                bin_dir: config.cni_bin_dir.clone(),
                plugin_source: config.cni_plugin.clone(),
                bridge: config.cni_bridge.clone(),
                pod_cidr: config.pod_cidr.clone(),
                cluster_cidr: config.cluster_cidr.clone(),
                mtu: nodelet::node_routes::table::uplink_mtu(config.node_ip).await,
                data_dir: config.cni_data_dir.clone(),
            };
            let (pod_network, gate) = PodNetwork::new(install, cri.clone(), v4_proxiers, client.is_some());
            tokio::spawn(pod_network.run(assigned_cidrs));
            gate
        }
        NetworkPlugin::External => {
            let (runtime_network, gate) = nodelet::pod_network::RuntimeNetwork::new(cri.clone(), v4_proxiers);
            tokio::spawn(runtime_network.run(assigned_cidrs));
            gate
        }
    };
    if let Some(cluster_client) = &cluster_client {
        keep_node_routes(&config, cluster_client.clone(), events.clone());
    }

    tokio::spawn(health::watch_runtime(cri.clone(), health.clone(), Duration::from_secs(5)));
    tokio::spawn(prepull_sandbox_image(cri.clone(), config.pod_infra_container_image.clone()));
    let exits = runtime::events::spawn_exit_watcher(cri.channel());
    let runtime_cache = runtime::relist::RuntimeCache::spawn(cri.clone(), config.node_name.clone(), runtime::relist::RELIST_PERIOD, &exits);

    let (container_gc, image_gc) = spawn_garbage_collection(&config, &cri, &runtime_cache, &store, events.clone());
    // The eviction manager reads the same figures as /stats/summary and ends pods through the pod manager.
    let (evictions, evicted) = tokio::sync::mpsc::unbounded_channel();
    let eviction = nodelet::eviction::Manager::new(
        config.eviction.clone(),
        nodelet::eviction::Real {
            stats: eviction_stats.expect("stats are collected unless the proxy runs alone"),
            containers: container_gc,
            images: image_gc,
            store: store.clone(),
            evictions,
        },
    );
    let pressure = eviction.pressure();
    tokio::spawn(eviction.run());
    if let Some(cgroups) = &cgroups {
        tokio::spawn(nodelet::pods::qos_cgroups::keep_burstable_shares(cgroups.clone(), store.clone(), Duration::from_secs(10)));
    }
    let deps = WorkerDeps {
        events,
        api: client.clone(),
        objects: client.clone().map(|client| {
            let pods = store.clone();
            nodelet::objects::Objects::start(client, move || pods.list())
        }),
        cri: cri.clone(),
        runtime: Arc::new(runtime::CachedCri { cri: cri.clone(), cache: runtime_cache }),
        ctx: ctx.clone(),
        exits,
        store,
        backoff_initial: config.backoff_initial,
        backoff_max: config.backoff_max,
        resync: config.sync_frequency,
        network: network_gate,
        cgroups: cgroups.clone().expect("pods' cgroups unless the proxy runs alone"),
    };
    let api_pods = client.as_ref().map(|client| join_cluster(client.clone(), &config, &deps, health.clone(), pressure.clone()));
    let admission = nodelet::pods::admission::AdmissionConfig {
        sysctls: nodelet::pods::admission::sysctls::Allowlist::new(&config.allowed_unsafe_sysctls)
            .map_err(|e| anyhow::anyhow!("--allowed-unsafe-sysctls: {e}"))?,
        // The node as it registers itself: its labels and allocatable (capacity less reserved).
        node: nodelet::pods::admission::NodeFacts {
            name: config.node_name.clone(),
            labels: node::object::node_labels(&config.node_name, &config.node_labels),
            max_pods: config.max_pods,
            allocatable_cpu_millis: (i64::from(facts.machine.num_cores) * 1000 - config.reserved.0).max(0),
            allocatable_memory: (facts.machine.memory_capacity as i64 - config.reserved.1).max(0),
        },
        pressure: Some(pressure),
    };
    let manager = Manager::new(deps, client, admission).with_evictions(evicted);
    let source = config.pod_manifest_path.clone().map(|dir| ManifestDir::new(dir, config.node_name.clone()));
    tokio::select! {
        _ = manager.run(source, api_pods, config.file_check_frequency, health) => Ok(()),
        mismatch = check_cgroup_driver(cri, config.cgroup_driver) => Err(mismatch),
        _ = shutdown_signal() => {
            // Like the kubelet, leaving does not stop the pods: a restarted nodelet adopts them.
            tracing::info!("nodelet stopping; pods keep running");
            Ok(())
        }
    }
}

/// The cgroup driver checked against the runtime's once it answers: a mismatch would fail every
/// pod with runc's words, so it stops nodelet with both settings named. Never returns otherwise.
async fn check_cgroup_driver(cri: runtime::Cri, ours: nodelet::cgroups::Driver) -> anyhow::Error {
    let runtime_driver = nodelet::retry::until_ok("asking the runtime for its cgroup driver", || cri.cgroup_driver()).await;
    match runtime_driver {
        Some(driver) if driver != ours => {
            return anyhow::anyhow!(
                "cgroupDriver (--cgroup-driver) is {:?} but the container runtime uses the {:?} driver \
                 (containerd: SystemdCgroup = {} in its runc options): set both to the same driver",
                ours.as_str(),
                driver.as_str(),
                driver == nodelet::cgroups::Driver::Systemd
            )
        }
        Some(_) => tracing::info!(driver = ours.as_str(), "the container runtime uses the same cgroup driver"),
        None => tracing::warn!("the container runtime does not say which cgroup driver it uses; nodelet uses {:?}", ours.as_str()),
    }
    std::future::pending().await
}

/// Pods' cgroups: the driver, and kubepods with its QoS levels made before any pod goes in them.
async fn pod_cgroups(config: &Config, facts: &machine::HostFacts) -> anyhow::Result<Arc<dyn nodelet::cgroups::PodCgroups>> {
    use anyhow::Context;
    let cgroups = nodelet::cgroups::Manager::new(config.cgroup_driver, &config.cgroup_root).await.context("cgroupDriver")?;
    let allocatable = nodelet::pods::qos_cgroups::Allocatable {
        cpu_millis: (i64::from(facts.machine.num_cores) * 1000 - config.reserved.0).max(0),
        memory: (facts.machine.memory_capacity as i64 - config.reserved.1).max(0),
        enforce: config.enforce_pods_allocatable,
    };
    nodelet::pods::qos_cgroups::setup(&cgroups, allocatable).await.context("making the kubepods cgroups")?;
    Ok(Arc::new(cgroups))
}

/// The node's credentials: its --kubeconfig, or a TLS bootstrap with --bootstrap-kubeconfig;
/// the client certificate is renewed before it expires (--rotate-certificates).
async fn node_credentials(config: &Config, kubeconfig: &Path) -> anyhow::Result<nodelet::credentials::bootstrap::NodeCredentials> {
    use nodelet::credentials::{bootstrap, renewal, store::CertDir};
    let settings = bootstrap::Settings {
        node_name: config.node_name.clone(),
        kubeconfig: kubeconfig.to_path_buf(),
        bootstrap_kubeconfig: config.bootstrap_kubeconfig.clone(),
        cert_dir: CertDir::new(&config.cert_dir),
    };
    let credentials = bootstrap::establish(&settings).await?;
    if let (true, Some(identity)) = (config.rotate_certificates, &credentials.identity) {
        tokio::spawn(renewal::renew_client(
            renewal::Renewal {
                client: credentials.client.clone(),
                identity: identity.clone(),
                node: config.node_name.clone(),
                cert_dir: settings.cert_dir,
                bootstrap_kubeconfig: config.bootstrap_kubeconfig.clone(),
            },
            credentials.bootstrapped,
        ));
    }
    Ok(credentials)
}

/// serverTLSBootstrap: the secure port serves the certificate the cluster issued (the one in the
/// cert dir at once, if still valid), requested and renewed in the background.
fn serve_certificate_from_cluster(
    config: &Config,
    client: kube::Client,
    serving: Arc<nodelet::credentials::identity::Identity>,
    host_ip: Option<&str>,
    events: nodelet::events::Recorder,
) {
    use nodelet::credentials::{csr::Purpose, renewal, store::CertDir};
    if config.tls_cert_file.is_some() {
        tracing::warn!("serverTLSBootstrap is on: --tls-cert-file and --tls-private-key-file are not used");
    }
    let cert_dir = CertDir::new(&config.cert_dir);
    let purpose = Purpose::Serving {
        dns_names: vec![config.node_name.clone()].into_iter().filter(|n| n.parse::<std::net::IpAddr>().is_err()).collect(),
        ips: host_ip.and_then(|ip| ip.parse().ok()).into_iter().collect(),
    };
    if let Some(pair) = cert_dir.load_current(purpose.file_prefix()).filter(|p| !p.leaf.expired_at(std::time::SystemTime::now())) {
        if let Err(e) = serving.replace(&pair) {
            tracing::warn!(error = %e, "the serving certificate in the cert dir cannot be used; requesting a new one");
        }
    }
    let renewal = renewal::Renewal { client, identity: serving, node: config.node_name.clone(), cert_dir, bootstrap_kubeconfig: None };
    tokio::spawn(renewal::serve_from_cluster(renewal, purpose, events));
}

/// A client from the kubeconfig given as `option` (named in errors).
async fn kube_client(option: &str, path: &Path) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| format!("{option} {}", path.display()))?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.with_context(|| format!("{option} {}", path.display()))?;
    Ok(kube::Client::try_from(config)?)
}

/// Cluster mode: registers the node and keeps it fresh, writes pod statuses, and returns the
/// stream of this node's pods from the apiserver.
fn join_cluster(
    client: kube::Client,
    config: &Config,
    deps: &WorkerDeps,
    health: Arc<Health>,
    pressure: tokio::sync::watch::Receiver<nodelet::eviction::NodePressure>,
) -> tokio::sync::mpsc::UnboundedReceiver<Vec<Arc<k8s_openapi::api::core::v1::Pod>>> {
    let settings = node::NodeSettings {
        name: config.node_name.clone(),
        labels: config.node_labels.clone(),
        taints: config.taints.clone(),
        internal_ip: deps.ctx.host_ip.clone(),
        pod_cidr: config.pod_cidr.clone(),
        max_pods: config.max_pods,
        reserved_cpu_millis: config.reserved.0,
        reserved_memory: config.reserved.1,
        kubelet_port: config.port.into(),
        provider_id: config.provider_id.clone(),
        lease_duration: config.lease_duration,
        lease_renew_every: config.lease_duration / 4,
        status_update_every: config.node_status_update_frequency,
        status_report_every: config.node_status_report_frequency,
        root_dir: config.root_dir.clone(),
    };
    let agent = Arc::new(node::NodeAgent { client: client.clone(), settings, cri: deps.cri.clone(), health, pressure });
    tokio::spawn(agent.run());
    tokio::spawn(nodelet::pods::status_sync::run(client.clone(), deps.store.clone(), config.node_name.clone()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(nodelet::pods::api_source::watch_node_pods(client, config.node_name.clone(), tx));
    rx
}

/// The routes to the other nodes' pod CIDRs (host-gw): kept with nodelet's own pod network,
/// and removed (nodelet's own only) when another CNI provides it.
fn keep_node_routes(config: &Config, client: kube::Client, events: nodelet::events::Recorder) {
    use nodelet::node_routes::{table::Netlink, NodeRoutes, ROUTE_PROTOCOL};
    let table = match Netlink::open(ROUTE_PROTOCOL) {
        Ok(table) => table,
        Err(e) => return tracing::error!("opening a netlink socket for the routes between nodes: {e}; no routes to other nodes' pods"),
    };
    let mut routes = NodeRoutes::new(config.node_name.clone(), table, events);
    match config.network_plugin {
        NetworkPlugin::Nodelet => {
            tokio::spawn(routes.run(client));
        }
        NetworkPlugin::External => {
            tokio::spawn(async move { routes.remove_all().await });
        }
    }
}

/// The Service proxy: a table of its own per address family (`ip6` only where the node has
/// IPv6), fed by Services and EndpointSlices.
fn start_proxy(client: kube::Client, config: &Config, health: Arc<Health>) -> anyhow::Result<Vec<Arc<nodelet::proxy::Proxier>>> {
    use nodelet::proxy::{model::Family, Proxier, ProxyConfig};
    let mut families = vec![Family::V4];
    if nodeip::has_global_ipv6() {
        families.push(Family::V6);
    }
    let mut proxiers = Vec::new();
    for family in families {
        let mut settings = ProxyConfig::new(config.node_name.clone());
        settings.table = config.proxy_table.clone();
        settings.family = family;
        // --pod-cidr is IPv4: IPv6 ClusterIP traffic is masqueraded only when it hairpins
        settings.pod_cidr = (family == Family::V4).then(|| config.pod_cidr.clone());
        let proxier = Arc::new(Proxier::new(settings).map_err(|e| anyhow::anyhow!("--proxy-table/--pod-cidr: {e:#}"))?);
        let runner = proxier.clone();
        tokio::spawn(async move { runner.run().await });
        proxiers.push(proxier);
    }
    tracing::info!(table = %config.proxy_table, families = ?proxiers.iter().map(|p| p.config().family).collect::<Vec<_>>(), "service proxy starting");
    tokio::spawn(nodelet::proxy::watch::follow(client, proxiers.clone()));
    tokio::spawn(health::watch_proxy(proxiers.clone(), health, Duration::from_secs(5)));
    Ok(proxiers)
}

/// Log rotation, container GC and image GC, each on its own schedule; returns the collectors
/// for the eviction manager's node-level reclaim.
fn spawn_garbage_collection(
    config: &Config,
    cri: &runtime::Cri,
    runtime_cache: &runtime::relist::RuntimeCache,
    store: &PodStore,
    events: nodelet::events::Recorder,
) -> (nodelet::gc::containers::ContainerGc, Arc<nodelet::gc::images::ImageGc>) {
    let rotation = nodelet::logrotate::Policy { max_size: config.container_log_max_size, max_files: config.container_log_max_files };
    tokio::spawn(nodelet::logrotate::LogRotator { cri: cri.clone(), runtime: runtime_cache.clone(), policy: rotation }.run());
    let containers = nodelet::gc::containers::ContainerGc {
        cri: cri.clone(),
        store: store.clone(),
        node_name: config.node_name.clone(),
        pod_logs_dir: config.pod_logs_dir.clone(),
        pod_data_root: config.root_dir.join("pods"),
        policy: config.container_gc,
    };
    tokio::spawn(containers.clone().run());
    let images = Arc::new(nodelet::gc::images::ImageGc::new(
        cri.clone(),
        config.image_gc,
        vec![config.pod_infra_container_image.clone()],
        events,
        config.node_name.clone(),
    ));
    tokio::spawn(images.clone().run());
    (containers, images)
}

/// Pulls the sandbox image at start so the first pod does not wait for it. It is containerd's
/// configured sandbox image that pods run (CRI gives nodelet no say), so one that cannot be
/// pulled (kubeadm passes registry.k8s.io's, unreachable on an offline node) is said once and
/// left: nodelet only keeps it from image GC.
async fn prepull_sandbox_image(cri: runtime::Cri, image: String) {
    let mut backoff = nodelet::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    for attempt in 1..=5 {
        let pulled = async {
            if cri.image_id(&image).await?.is_none() {
                cri.pull_image(&image, None, None).await?;
                tracing::info!(image = %image, "sandbox image pulled");
            }
            Ok::<(), runtime::CriError>(())
        };
        match pulled.await {
            Ok(()) => return,
            Err(e) if attempt == 5 => {
                tracing::warn!(image = %image, error = %e, "--pod-infra-container-image: cannot pull it; pods use containerd's configured sandbox image")
            }
            Err(_) => tokio::time::sleep(backoff.fail()).await,
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
