//! The systemd driver: pods' cgroups are systemd slices, made and changed through systemd's
//! D-Bus API (StartTransientUnit, SetUnitProperties, StopUnit) as runc's systemd driver and the
//! kubelet make them, so systemd knows them and containerd (SystemdCgroup = true) can put its
//! container scopes in them. nodelet talks to systemd on the system bus (systemd's private
//! socket sends replies whose sender is a well-known name, which zbus refuses).

use super::layout::{CgroupName, Layout, Qos};
use super::resources::{ResourceConfig, UnitValue, Version};
use super::CgroupError;
use std::path::PathBuf;
use zbus::zvariant::Value;

const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

#[derive(Debug, Clone)]
pub struct Systemd {
    conn: zbus::Connection,
    pub mount: PathBuf,
    pub version: Version,
    pub layout: Layout,
}

type Property<'a> = (&'a str, Value<'a>);

fn value(v: UnitValue) -> Value<'static> {
    match v {
        UnitValue::Bool(b) => Value::from(b),
        UnitValue::U64(n) => Value::from(n),
    }
}

impl Systemd {
    pub async fn connect(mount: PathBuf, version: Version, layout: Layout) -> Result<Systemd, CgroupError> {
        let conn = zbus::Connection::system().await.map_err(|source| CgroupError::Systemd {
            what: "connecting to systemd on the system bus (the systemd driver needs systemd as the init system, and dbus)".into(),
            source: Box::new(source),
        })?;
        Ok(Systemd { conn, mount, version, layout })
    }

    async fn call<B>(&self, method: &'static str, body: &B) -> Result<(), zbus::Error>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn.call_method(Some("org.freedesktop.systemd1"), PATH, Some(MANAGER), method, body).await.map(|_| ())
    }

    /// Starts the cgroup's slice with `resources`, or sets them on the slice already there.
    pub async fn ensure(&self, name: &CgroupName, resources: &ResourceConfig) -> Result<(), CgroupError> {
        let unit = self.layout.unit(name);
        let settings: Vec<Property> = resources.unit_properties(self.version).into_iter().map(|(k, v)| (k, value(v))).collect();
        let parent = CgroupName(name.0[..name.0.len().saturating_sub(1)].to_vec());
        let mut start: Vec<Property> = vec![
            ("Description", Value::from(format!("nodelet: {}", name.0.last().map(String::as_str).unwrap_or("pods")))),
            ("Wants", Value::from(vec![self.layout.unit(&parent)])),
            ("DefaultDependencies", Value::from(false)),
        ];
        start.extend(settings.iter().cloned());
        let aux: Vec<(&str, Vec<Property>)> = Vec::new();
        match self.call("StartTransientUnit", &(unit.as_str(), "replace", start, aux)).await {
            Ok(()) => Ok(()),
            Err(zbus::Error::MethodError(error, _, _)) if error.as_str() == "org.freedesktop.systemd1.UnitExists" => self
                .call("SetUnitProperties", &(unit.as_str(), true, settings))
                .await
                .map_err(|source| CgroupError::Systemd { what: format!("setting the properties of {unit}"), source: Box::new(source) }),
            Err(source) => Err(CgroupError::Systemd { what: format!("starting {unit}"), source: Box::new(source) }),
        }
    }

    /// Stops the cgroup's slice; one that is not there is fine.
    pub async fn remove(&self, name: &CgroupName) -> Result<(), CgroupError> {
        let unit = self.layout.unit(name);
        match self.call("StopUnit", &(unit.as_str(), "replace")).await {
            Ok(()) => Ok(()),
            Err(zbus::Error::MethodError(error, _, _)) if error.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => Ok(()),
            Err(source) => Err(CgroupError::Systemd { what: format!("stopping {unit}"), source: Box::new(source) }),
        }
    }

    /// The pods that have a slice, by QoS level, read from the cgroup mount.
    pub fn pod_uids(&self) -> Vec<(Qos, String)> {
        let mut out = Vec::new();
        for qos in Qos::ALL {
            let relative = self.layout.path(&self.layout.qos(qos));
            let dir = match self.version {
                Version::V1 => self.mount.join("memory").join(relative.trim_start_matches('/')),
                Version::V2 => self.mount.join(relative.trim_start_matches('/')),
            };
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            out.extend(entries.flatten().filter_map(|e| self.layout.pod_uid_of(&e.file_name().to_string_lossy())).map(|uid| (qos, uid)));
        }
        out
    }
}
