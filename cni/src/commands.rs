//! ADD, DEL and CHECK: the order of effects, and what to undo on failure.

use crate::config::NetConf;
use crate::env::Args;
use crate::error::{code, setup, CniError, Result};
use crate::ipam::store::Store;
use crate::result::{AddResult, Interface};
use crate::{masq, names, netlink, netns};
use std::future::Future;
use std::path::Path;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Run async netlink work on a single-threaded runtime: the plugin is a
/// short-lived process and needs no worker pool.
fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|e| setup("starting the async runtime", e))?.block_on(fut)
}

fn netns_path(args: &Args) -> Result<&Path> {
    args.netns.as_deref().ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is not set", ""))
}

fn enable_forwarding() -> Result<()> {
    if std::fs::read_to_string(IP_FORWARD).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1").map_err(|e| setup(format!("writing 1 to {IP_FORWARD}"), e))
}

pub fn add(args: &Args, conf: &NetConf) -> Result<AddResult> {
    let ns_path = netns_path(args)?;
    let ns_file = netns::open(ns_path).map_err(|e| setup(format!("opening netns {}", ns_path.display()), e))?;
    enable_forwarding()?;
    if conf.ip_masq {
        masq::ensure(&conf.masq_table, masq::Masquerade { subnet: conf.subnet, kept: conf.cluster_cidr }, &conf.data_dir)?;
    }
    let ip = Store::lock(&conf.data_dir, &conf.name)?.allocate(&args.container_id, &args.ifname, conf.subnet, conf.gateway)?;
    let host_veth = names::host_veth(&args.container_id, &args.ifname);
    let prefix = conf.subnet.prefix();

    let wired = block_on(async {
        let host = netns::connect_host().map_err(|e| setup("opening netlink socket", e))?;
        let bridge = netlink::ensure_bridge(&host, &conf.bridge, conf.gateway, prefix).await.map_err(|e| setup("setting up the bridge", e))?;
        // A veth left by an earlier ADD of this container is replaced, so a
        // repeated ADD always ends in the same, freshly configured state.
        netlink::delete_link(&host, &host_veth).await.map_err(|e| setup(format!("removing stale veth {host_veth}"), e))?;
        let spec = netlink::VethSpec {
            host_name: &host_veth,
            peer_name: &args.ifname,
            peer_netns_fd: std::os::fd::AsRawFd::as_raw_fd(&ns_file),
            peer_mac: names::mac_for_ip(ip),
            mtu: conf.mtu,
            bridge_index: bridge.header.index,
        };
        netlink::create_veth(&host, &spec).await.map_err(|e| setup(format!("creating veth pair {host_veth}/{}", args.ifname), e))?;
        netlink::set_hairpin(&host, &host_veth).await.map_err(|e| setup(format!("setting hairpin mode on {host_veth}"), e))?;
        let inner = netns::connect_in(&ns_file).map_err(|e| setup("opening netlink socket in the netns", e))?;
        let container_mac = netlink::configure_container(&inner, &args.ifname, ip, prefix, conf.gateway)
            .await
            .map_err(|e| setup(format!("configuring {} in the netns", args.ifname), e))?;
        let host_mac = netlink::link_by_name(&host, &host_veth).await.ok().flatten().map(|l| netlink::mac_of(&l)).unwrap_or_default();
        Ok(AddResult {
            interfaces: vec![
                Interface { name: conf.bridge.clone(), mac: netlink::mac_of(&bridge), sandbox: None },
                Interface { name: host_veth.clone(), mac: host_mac, sandbox: None },
                Interface { name: args.ifname.clone(), mac: container_mac, sandbox: Some(ns_path.display().to_string()) },
            ],
            ip,
            prefix,
            gateway: conf.gateway,
            container_iface: 2,
        })
    });
    if wired.is_err() {
        // Undo what we can now; the runtime's DEL would do the same later.
        let _ = teardown(args, conf);
    }
    wired
}

/// Remove the veth first, then free the address: the reverse order could
/// hand the address to a new pod while the old one still answers on it.
fn teardown(args: &Args, conf: &NetConf) -> Result<()> {
    let host_veth = names::host_veth(&args.container_id, &args.ifname);
    block_on(async {
        let host = netns::connect_host().map_err(|e| setup("opening netlink socket", e))?;
        netlink::delete_link(&host, &host_veth).await.map_err(|e| setup(format!("deleting veth {host_veth}"), e))?;
        Ok(())
    })?;
    Store::lock(&conf.data_dir, &conf.name)?.release(&args.container_id, &args.ifname)?;
    Ok(())
}

pub fn del(args: &Args, conf: &NetConf) -> Result<()> {
    // The netns is not needed: deleting the host end destroys the peer, and
    // if the netns is already gone the kernel has removed both ends.
    teardown(args, conf)
}

pub fn check(args: &Args, conf: &NetConf) -> Result<()> {
    let failed = |msg: String| CniError::new(code::CHECK_FAILED, msg, "");
    let ip = Store::lock(&conf.data_dir, &conf.name)?
        .find(&args.container_id, &args.ifname)?
        .ok_or_else(|| failed(format!("no address is allocated in network {}", conf.name)))?;
    let ns_path = netns_path(args)?;
    let ns_file = netns::open(ns_path).map_err(|e| failed(format!("cannot open netns {}: {e}", ns_path.display())))?;
    let host_veth = names::host_veth(&args.container_id, &args.ifname);
    block_on(async {
        let host = netns::connect_host().map_err(|e| setup("opening netlink socket", e))?;
        netlink::check_host_veth(&host, &host_veth, &conf.bridge).await.map_err(failed)?;
        let inner = netns::connect_in(&ns_file).map_err(|e| setup("opening netlink socket in the netns", e))?;
        netlink::check_container(&inner, &args.ifname, ip, conf.subnet.prefix(), conf.gateway).await.map_err(failed)
    })
}
