//! The host's routing table as the routes between nodes need it: a trait, its netlink side
//! (rtnetlink, as nodelet-cni uses) and, for unit tests, a recording fake.

use super::plan::{Cidr, Connected, HostRoute, HostView, Route};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// A failed change or read of the routing table: what was done, to which route, and why.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("reading the host's {what} over netlink: {cause}")]
    Read { what: &'static str, cause: String },
    #[error("{action} the route to {dst} via {gateway}: {cause}")]
    Change { action: &'static str, dst: Cidr, gateway: String, cause: String },
}

/// What the routes between nodes do to the host's routing table.
#[async_trait::async_trait]
pub trait RouteTable: Send + Sync {
    /// The host's IPv4 interface addresses and the routes of its main table.
    async fn view(&self) -> Result<HostView, RouteError>;
    async fn add(&self, route: &Route) -> Result<(), RouteError>;
    /// Replaces nodelet's route to the same destination.
    async fn replace(&self, route: &Route) -> Result<(), RouteError>;
    async fn delete(&self, route: &HostRoute) -> Result<(), RouteError>;
}

/// The main table of this network namespace, over rtnetlink.
pub struct Netlink {
    handle: Handle,
    protocol: u8,
}

impl Netlink {
    /// Opens a netlink socket (its connection runs on the current tokio runtime); `protocol`
    /// tags the routes it adds.
    pub fn open(protocol: u8) -> std::io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Netlink { handle, protocol })
    }

    fn message(&self, route: &Route) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.addr, route.dst.prefix)
            .gateway(route.gateway)
            .output_interface(route.oif)
            .protocol(RouteProtocol::from(self.protocol))
            .build()
    }
}

fn change_error(action: &'static str, dst: Cidr, gateway: String) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    move |e| RouteError::Change { action, dst, gateway, cause: e.to_string() }
}

#[async_trait::async_trait]
impl RouteTable for Netlink {
    async fn view(&self) -> Result<HostView, RouteError> {
        let read = |what| move |e: rtnetlink::Error| RouteError::Read { what, cause: e.to_string() };
        let links: Vec<_> = self.handle.link().get().execute().try_collect().await.map_err(read("interfaces"))?;
        let names: HashMap<u32, (String, bool)> = links
            .iter()
            .map(|l| {
                let name = l.attributes.iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.clone()) } else { None }).unwrap_or_default();
                (l.header.index, (name, l.header.flags.contains(LinkFlags::Loopback)))
            })
            .collect();
        let addresses: Vec<_> = self.handle.address().get().execute().try_collect().await.map_err(read("addresses"))?;
        let addresses = addresses
            .iter()
            .filter_map(|a| {
                let ip = a.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })?;
                let (interface, loopback) = names.get(&a.header.index).cloned().unwrap_or_default();
                Some(Connected { address: ip, subnet: Cidr::of_address(ip, a.header.prefix_len), oif: a.header.index, interface, loopback })
            })
            .collect();
        let routes: Vec<RouteMessage> =
            self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute().try_collect().await.map_err(read("routes"))?;
        let routes = routes.iter().filter(|r| in_main_table(r) && r.header.kind == RouteType::Unicast).filter_map(host_route).collect();
        Ok(HostView { addresses, routes })
    }

    async fn add(&self, route: &Route) -> Result<(), RouteError> {
        self.handle.route().add(self.message(route)).execute().await.map_err(change_error("adding", route.dst, route.gateway.to_string()))
    }

    async fn replace(&self, route: &Route) -> Result<(), RouteError> {
        self.handle.route().add(self.message(route)).replace().execute().await.map_err(change_error("replacing", route.dst, route.gateway.to_string()))
    }

    async fn delete(&self, route: &HostRoute) -> Result<(), RouteError> {
        let mut builder =
            RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(route.dst.addr, route.dst.prefix).protocol(RouteProtocol::from(route.protocol));
        if let Some(gateway) = route.gateway {
            builder = builder.gateway(gateway);
        }
        let gateway = route.gateway.map(|g| g.to_string()).unwrap_or_default();
        self.handle.route().del(builder.build()).execute().await.map_err(change_error("deleting", route.dst, gateway))
    }
}

fn in_main_table(route: &RouteMessage) -> bool {
    let table = route.attributes.iter().find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None });
    table.unwrap_or(u32::from(route.header.table)) == u32::from(RouteHeader::RT_TABLE_MAIN)
}

fn host_route(route: &RouteMessage) -> Option<HostRoute> {
    let dst = route
        .attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Destination(RouteAddress::Inet(ip)) = a { Some(*ip) } else { None })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Some(HostRoute {
        dst: Cidr::new(dst, route.header.destination_prefix_length).ok()?,
        gateway: route.attributes.iter().find_map(|a| if let RouteAttribute::Gateway(RouteAddress::Inet(ip)) = a { Some(*ip) } else { None }),
        oif: route.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None }),
        protocol: u8::from(route.header.protocol),
    })
}

/// The MTU of the node's uplink: the interface holding `node_ip` (unless that is a loopback
/// address), else the one of the default route; None when neither is found.
pub async fn uplink_mtu(node_ip: Option<IpAddr>) -> Option<u32> {
    let (connection, handle, _) = rtnetlink::new_connection().ok()?;
    let task = tokio::spawn(connection);
    let mtu = async {
        let mut index = None;
        if let Some(ip) = node_ip.filter(|ip| !ip.is_loopback()) {
            let addresses: Vec<_> = handle.address().get().execute().try_collect().await.ok()?;
            index = addresses
                .iter()
                .find(|a| a.attributes.iter().any(|at| matches!(at, AddressAttribute::Local(x) | AddressAttribute::Address(x) if *x == ip)))
                .map(|a| a.header.index);
        }
        if index.is_none() {
            let routes: Vec<RouteMessage> = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute().try_collect().await.ok()?;
            index = routes
                .iter()
                .filter(|r| in_main_table(r) && r.header.destination_prefix_length == 0)
                .find_map(|r| r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None }));
        }
        let link = handle.link().get().match_index(index?).execute().try_next().await.ok()??;
        link.attributes.iter().find_map(|a| if let LinkAttribute::Mtu(m) = a { Some(*m) } else { None })
    }
    .await;
    task.abort();
    mtu
}

/// A routing table in memory that records the changes made to it, for unit tests.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Recording {
        pub view: Mutex<HostView>,
        pub changes: Mutex<Vec<String>>,
        pub protocol: u8,
    }

    impl Recording {
        pub fn new(view: HostView, protocol: u8) -> Recording {
            Recording { view: Mutex::new(view), changes: Mutex::default(), protocol }
        }

        pub fn take_changes(&self) -> Vec<String> {
            std::mem::take(&mut *self.changes.lock().unwrap())
        }

        fn host_route(&self, route: &Route) -> HostRoute {
            HostRoute { dst: route.dst, gateway: Some(route.gateway), oif: Some(route.oif), protocol: self.protocol }
        }
    }

    #[async_trait::async_trait]
    impl RouteTable for Recording {
        async fn view(&self) -> Result<HostView, RouteError> {
            Ok(self.view.lock().unwrap().clone())
        }
        async fn add(&self, route: &Route) -> Result<(), RouteError> {
            self.changes.lock().unwrap().push(format!("add {} via {}", route.dst, route.gateway));
            let r = self.host_route(route);
            self.view.lock().unwrap().routes.push(r);
            Ok(())
        }
        async fn replace(&self, route: &Route) -> Result<(), RouteError> {
            self.changes.lock().unwrap().push(format!("replace {} via {}", route.dst, route.gateway));
            let r = self.host_route(route);
            let mut view = self.view.lock().unwrap();
            view.routes.retain(|x| !(x.dst == route.dst && x.protocol == r.protocol));
            view.routes.push(r);
            Ok(())
        }
        async fn delete(&self, route: &HostRoute) -> Result<(), RouteError> {
            self.changes.lock().unwrap().push(format!("delete {}", route.dst));
            self.view.lock().unwrap().routes.retain(|x| x != route);
            Ok(())
        }
    }
}
