//! nodelet-test-apiserver --listen 127.0.0.1:0 --dir DIR --node NAME...

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A small, strict, in-memory stand-in for kube-apiserver (HTTPS with client certificates).
#[derive(Parser, Debug)]
#[command(name = "nodelet-test-apiserver", version)]
struct Cli {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// State directory: ca.crt, ca.key, admin.kubeconfig, node-<name>.kubeconfig, port, state.json.
    #[arg(long)]
    dir: PathBuf,
    /// Write node-<name>.kubeconfig with credentials of this node (repeatable).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Number of changes kept for watches; a watch from an older resourceVersion gets 410 Expired.
    #[arg(long, default_value_t = 1000)]
    watch_window: usize,
    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 5)]
    bookmark_interval: u64,
    /// Do not keep objects in DIR/state.json across restarts.
    #[arg(long)]
    no_persist: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut opts = nodelet_test_apiserver::Options::new(&cli.dir)
        .listen(cli.listen)
        .watch_window(cli.watch_window)
        .bookmark_interval(Duration::from_secs(cli.bookmark_interval.max(1)));
    opts.nodes = cli.nodes;
    opts.persist = !cli.no_persist;
    let running = nodelet_test_apiserver::start(opts).await?;
    println!("listening on {}", running.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.stop().await
}
