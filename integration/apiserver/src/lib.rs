//! nodelet-test-apiserver: a small, strict, in-memory stand-in for kube-apiserver that speaks
//! the Kubernetes REST/JSON protocol over mutual TLS, for nodelet's tests and CI.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let opts = nodelet_test_apiserver::Options::new(dir.path()).node("n1");
//! let running = nodelet_test_apiserver::start(opts).await?;
//! // KUBECONFIG=running.admin_kubeconfig(), or running.node_kubeconfig_path("n1")
//! let port = running.port;
//! running.stop().await?;
//! // Start again on the same port and directory: objects and resourceVersions are kept.
//! let again = nodelet_test_apiserver::start(
//!     nodelet_test_apiserver::Options::new(dir.path()).listen(([127, 0, 0, 1], port).into()),
//! ).await?;
//! # again.stop().await }
//! ```

pub mod admission;
pub mod auth;
pub mod discovery;
pub mod error;
pub mod http;
pub mod node_proxy;
pub mod node_target;
pub mod patch;
pub mod proto;
pub mod reviews;
pub mod selectors;
pub mod store;
pub mod table;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::Pki;
use crate::http::App;
use crate::store::Store;

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// State directory: CA, kubeconfigs, `port`, and the persisted objects (`state.json`).
    pub dir: PathBuf,
    /// Nodes to write `node-<name>.kubeconfig` for.
    pub nodes: Vec<String>,
    /// How many changes are kept for watches; older resourceVersions get 410 Expired.
    pub watch_window: usize,
    /// How often a watch with allowWatchBookmarks=true gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Keep objects in `dir/state.json` across restarts.
    pub persist: bool,
}

impl Options {
    pub fn new(dir: impl Into<PathBuf>) -> Options {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: dir.into(),
            nodes: Vec::new(),
            watch_window: 1000,
            bookmark_interval: Duration::from_secs(5),
            persist: true,
        }
    }

    pub fn listen(mut self, addr: SocketAddr) -> Options {
        self.listen = addr;
        self
    }

    pub fn node(mut self, name: &str) -> Options {
        self.nodes.push(name.to_string());
        self
    }

    pub fn watch_window(mut self, n: usize) -> Options {
        self.watch_window = n;
        self
    }

    pub fn bookmark_interval(mut self, d: Duration) -> Options {
        self.bookmark_interval = d;
        self
    }
}

/// The handle that stops a running server.
pub struct Handle {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    app: Arc<App>,
    pki: Arc<Pki>,
}

/// A running server.
pub struct Running {
    pub port: u16,
    pub dir: PathBuf,
    pub handle: Handle,
}

impl Running {
    /// `https://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn ca_pem(&self) -> &str {
        &self.handle.pki.ca_pem
    }

    /// Writes (or rewrites) `node-<name>.kubeconfig` with credentials of node `name`.
    pub fn node_kubeconfig(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.handle
            .pki
            .write_node_kubeconfig(&self.dir, self.port, name)
    }

    /// A client certificate and key (PEM) for any user and groups.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> anyhow::Result<(String, String)> {
        self.handle.pki.client(user, groups)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.handle.app.store.current_rv()
    }

    /// Stops serving: closes the listener and every connection (watches end), and saves the
    /// objects to `dir/state.json`.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.handle.shutdown.send(true);
        self.handle.task.await.context("server task")?;
        self.handle.app.store.save()
    }
}

/// Starts a server: makes or loads the CA in `opts.dir`, writes `ca.crt`, `admin.kubeconfig`,
/// `node-<name>.kubeconfig` and `port`, loads `state.json` if present, and serves HTTPS.
pub async fn start(opts: Options) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let pki = Arc::new(Pki::load_or_create(&opts.dir)?);
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let port = listener.local_addr()?.port();
    let state_file = opts.persist.then(|| opts.dir.join("state.json"));
    let store = Store::open(state_file, opts.watch_window).context("loading state.json")?;
    http::bootstrap(&store, &pki.ca_pem, port);
    let app = Arc::new(App {
        store,
        tokens: Mutex::new(HashMap::new()),
        bookmark_interval: opts.bookmark_interval,
        ca_pem: pki.ca_pem.clone(),
        kubelet: node_proxy::KubeletClient::new(&pki)?,
    });
    pki.write_kubeconfig(
        &opts.dir.join("admin.kubeconfig"),
        port,
        "admin",
        &["system:masters"],
    )?;
    for n in &opts.nodes {
        pki.write_node_kubeconfig(&opts.dir, port, n)?;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()?));
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, acceptor, app.clone(), rx));
    store::write_atomic(&opts.dir.join("port"), port.to_string().as_bytes())?;
    Ok(Running {
        port,
        dir: opts.dir,
        handle: Handle {
            shutdown,
            task,
            app,
            pki,
        },
    })
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut save_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = save_tick.tick() => {
                if let Err(e) = app.store.save() {
                    tracing::warn!("saving state: {e:#}");
                }
                while conns.try_join_next().is_some() {}
            }
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                conns.spawn(serve_connection(tcp, acceptor.clone(), app.clone()));
            }
        }
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Arc<App>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!("TLS handshake: {e}");
            return;
        }
    };
    let user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| auth::user_from_cert(c));
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let user = user.clone();
        async move { Ok::<_, Infallible>(http::handle(app, user, req.map(Body::new)).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!("connection: {e}");
    }
}

/// Reads the port a server started with `dir` wrote.
pub fn read_port(dir: &Path) -> Option<u16> {
    std::fs::read_to_string(dir.join("port"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
