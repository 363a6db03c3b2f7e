//! The netlink operations the plugin needs, each idempotent where the spec
//! asks for it ("already exists" on create, "no such device" on delete).

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

pub type NlResult<T> = Result<T, rtnetlink::Error>;

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const ENOENT: i32 = 2;

/// The positive errno of a kernel NACK, if that is what the error is.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

fn ok_if(res: NlResult<()>, code: i32) -> NlResult<()> {
    match res {
        Err(e) if errno(&e) == Some(code) => Ok(()),
        other => other,
    }
}

pub async fn link_by_name(h: &Handle, name: &str) -> NlResult<Option<LinkMessage>> {
    match h.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn mac_of(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(crate::names::format_mac(mac)),
            _ => None,
        })
        .unwrap_or_default()
}

fn kind_of(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

fn controller_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

pub async fn set_up(h: &Handle, index: u32) -> NlResult<()> {
    h.link().change(LinkUnspec::new_with_index(index).up().build()).execute().await
}

/// Create (or adopt) the bridge, bring it up and give it the gateway address.
/// Safe against concurrent ADDs: whoever loses a race gets EEXIST and adopts.
pub async fn ensure_bridge(h: &Handle, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<LinkMessage, String> {
    let nl = |what: &str, e: rtnetlink::Error| format!("{what} bridge {name}: {e}");
    if link_by_name(h, name).await.map_err(|e| nl("looking up", e))?.is_none() {
        // A fixed MAC: otherwise the bridge takes the lowest port MAC, which
        // changes as pods come and go and stales the pods' ARP entry for the
        // gateway.
        let mac = crate::names::mac_for_ip(gateway).to_vec();
        let res = h.link().add(LinkBridge::new(name).address(mac).build()).execute().await;
        ok_if(res, EEXIST).map_err(|e| nl("creating", e))?;
    }
    let link = link_by_name(h, name).await.map_err(|e| nl("looking up", e))?.ok_or_else(|| format!("bridge {name} vanished right after creation"))?;
    if kind_of(&link) != Some(&InfoKind::Bridge) {
        return Err(format!("interface {name} exists but is not a bridge"));
    }
    let index = link.header.index;
    set_up(h, index).await.map_err(|e| nl("bringing up", e))?;
    let res = h.address().add(index, IpAddr::V4(gateway), prefix).execute().await;
    ok_if(res, EEXIST).map_err(|e| nl(&format!("adding {gateway}/{prefix} to"), e))?;
    Ok(link)
}

pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub peer_name: &'a str,
    /// Open fd of the container's netns: the peer is created directly inside,
    /// so no half-configured interface ever sits in the host namespace.
    pub peer_netns_fd: RawFd,
    pub peer_mac: [u8; 6],
    pub mtu: Option<u32>,
    pub bridge_index: u32,
}

/// Create the veth pair, host end up and attached to the bridge.
pub async fn create_veth(h: &Handle, spec: &VethSpec<'_>) -> NlResult<()> {
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(spec.peer_name.to_owned()).address(spec.peer_mac.to_vec()).setns_by_fd(spec.peer_netns_fd);
    let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(spec.host_name.to_owned()).controller(spec.bridge_index).up();
    if let Some(mtu) = spec.mtu {
        peer = peer.mtu(mtu);
        host = host.mtu(mtu);
    }
    let msg = host.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build()))).build();
    h.link().add(msg).execute().await
}

/// Hairpin mode on the pod's bridge port: a pod reaching itself through a Service address is
/// DNATed back to its own address, and the bridge must send that frame out the port it came in.
pub async fn set_hairpin(h: &Handle, host_name: &str) -> NlResult<()> {
    let Some(link) = link_by_name(h, host_name).await? else {
        return Ok(());
    };
    let msg = LinkBridgePort::new(link.header.index).hairpin(true).build();
    // Port (slave) attributes go through RTM_NEWLINK; RTM_SETLINK ignores them.
    h.link().set_port(msg).execute().await
}

/// Delete a link by name; returns whether it existed.
pub async fn delete_link(h: &Handle, name: &str) -> NlResult<bool> {
    let Some(link) = link_by_name(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        // Raced with another DEL or the netns going away: gone is gone.
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Inside the container: address, up, loopback up, default route.
/// Returns the interface's MAC.
pub async fn configure_container(h: &Handle, ifname: &str, ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<String, String> {
    let nl = |what: &str, e: rtnetlink::Error| format!("{what}: {e}");
    let link = link_by_name(h, ifname)
        .await
        .map_err(|e| nl("looking up the interface", e))?
        .ok_or_else(|| format!("interface {ifname} not found after creating it"))?;
    let index = link.header.index;
    let res = h.address().add(index, IpAddr::V4(ip), prefix).execute().await;
    ok_if(res, EEXIST).map_err(|e| nl(&format!("adding address {ip}/{prefix}"), e))?;
    set_up(h, index).await.map_err(|e| nl("bringing the interface up", e))?;
    if let Some(lo) = link_by_name(h, "lo").await.map_err(|e| nl("looking up lo", e))? {
        set_up(h, lo.header.index).await.map_err(|e| nl("bringing lo up", e))?;
    }
    let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
    let res = h.route().add(route).execute().await;
    ok_if(res, EEXIST).map_err(|e| nl(&format!("adding default route via {gateway}"), e))?;
    Ok(mac_of(&link))
}

/// CHECK inside the container: the interface, its address and default route.
pub async fn check_container(h: &Handle, ifname: &str, ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<(), String> {
    let link = link_by_name(h, ifname).await.map_err(|e| format!("looking up {ifname}: {e}"))?.ok_or_else(|| format!("interface {ifname} does not exist"))?;
    let index = link.header.index;
    let addrs: Vec<_> =
        h.address().get().set_link_index_filter(index).execute().try_collect().await.map_err(|e| format!("listing addresses of {ifname}: {e}"))?;
    let has_addr =
        addrs.iter().any(|a| a.header.prefix_len == prefix && a.attributes.iter().any(|at| matches!(at, AddressAttribute::Address(IpAddr::V4(x)) if *x == ip)));
    if !has_addr {
        return Err(format!("interface {ifname} does not have address {ip}/{prefix}"));
    }
    let routes: Vec<_> =
        h.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute().try_collect().await.map_err(|e| format!("listing routes: {e}"))?;
    let has_default = routes.iter().any(|r| {
        r.header.destination_prefix_length == 0
            && r.attributes.iter().any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
            && r.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(RouteAddress::Inet(g)) if *g == gateway))
    });
    if !has_default {
        return Err(format!("no default route via {gateway} on {ifname}"));
    }
    Ok(())
}

/// CHECK on the host: the host veth exists and is a port of the bridge.
pub async fn check_host_veth(h: &Handle, host_name: &str, bridge: &str) -> Result<(), String> {
    let veth =
        link_by_name(h, host_name).await.map_err(|e| format!("looking up {host_name}: {e}"))?.ok_or_else(|| format!("host veth {host_name} does not exist"))?;
    let br = link_by_name(h, bridge).await.map_err(|e| format!("looking up {bridge}: {e}"))?.ok_or_else(|| format!("bridge {bridge} does not exist"))?;
    if controller_of(&veth) != Some(br.header.index) {
        return Err(format!("host veth {host_name} is not attached to bridge {bridge}"));
    }
    Ok(())
}
