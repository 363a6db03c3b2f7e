//! nodelet-cni: a CNI 1.0 plugin giving each pod a veth on a bridge, an
//! address from a host-local pool and a default route, all over netlink.

mod commands;
mod config;
mod env;
mod error;
mod ipam;
mod masq;
mod names;
mod netlink;
mod netns;
mod result;
mod subnet;

use error::{CniError, Result};
use std::io::Read;

/// Dispatch one invocation; returns what to print on success.
fn run(args: &env::Args, stdin: &[u8]) -> Result<String> {
    if args.command == env::Command::Version {
        return Ok(result::version_json());
    }
    let conf = config::parse(stdin)?;
    match args.command {
        env::Command::Add => commands::add(args, &conf).map(|r| r.to_json(&conf.cni_version)),
        env::Command::Del => commands::del(args, &conf).map(|()| String::new()),
        env::Command::Check => commands::check(args, &conf).map(|()| String::new()),
        env::Command::Version => unreachable!("handled above"),
    }
}

fn main() {
    let mut stdin = Vec::new();
    let outcome = env::from_lookup(|k| std::env::var(k).ok()).and_then(|args| {
        // VERSION needs no config; don't block on a stdin nobody writes.
        if args.command != env::Command::Version {
            std::io::stdin().read_to_end(&mut stdin).map_err(|e| CniError::new(error::code::DECODE, "reading config from stdin", e.to_string()))?;
        }
        run(&args, &stdin).map_err(|e| e.context(&args.describe()))
    });
    match outcome {
        Ok(out) if out.is_empty() => {}
        Ok(out) => println!("{out}"),
        Err(e) => {
            // Answer in the version the runtime asked for, if we speak it.
            let version = config::sniff_version(&stdin).filter(|v| config::SUPPORTED_VERSIONS.contains(&v.as_str())).unwrap_or_else(|| "1.0.0".to_owned());
            println!("{}", e.to_json(&version));
            eprintln!("nodelet-cni: {e}");
            std::process::exit(1);
        }
    }
}
