//! What the proxier needs of nftables, as kube-proxy's `knftables.Interface`: run a script as
//! one transaction, run several side by side, list the family's tables. `apply::Nft`
//! (libnftables in the proxy's network namespace) is the real side; `fake::FakeNftables`
//! (tests) keeps the table in memory and answers what is in it.

use super::apply::{ApplyError, Nft};
use super::model::Family;
use futures::future::BoxFuture;

pub trait Nftables: Send + Sync {
    /// Applies `script` as one transaction: all of it or none.
    fn apply<'a>(&'a self, script: &'a str) -> BoxFuture<'a, Result<(), ApplyError>>;

    /// Applies the scripts side by side, each a transaction of its own (a full sync's elements).
    fn apply_all<'a>(&'a self, scripts: &'a [String]) -> BoxFuture<'a, Result<(), ApplyError>>;

    /// The names of the tables of `family` there are now.
    fn list_tables(&self, family: Family) -> BoxFuture<'_, Result<Vec<String>, ApplyError>>;

    /// How many scripts `apply_all` parses at once (a full sync splits its elements into as many).
    fn parallelism(&self) -> usize;
}

/// Table names in `nft list tables <family>` output ("table ip nodelet" lines).
pub fn table_names(listing: &str, family: Family) -> Vec<String> {
    let prefix = format!("table {} ", family.nft());
    listing.lines().filter_map(|l| l.trim().strip_prefix(&prefix)).map(|n| n.trim().to_string()).collect()
}

impl Nftables for Nft {
    fn apply<'a>(&'a self, script: &'a str) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(Nft::apply(self, script))
    }

    fn apply_all<'a>(&'a self, scripts: &'a [String]) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(Nft::apply_all(self, scripts))
    }

    fn list_tables(&self, family: Family) -> BoxFuture<'_, Result<Vec<String>, ApplyError>> {
        Box::pin(async move { Ok(table_names(&self.run(&format!("list tables {}", family.nft())).await?, family)) })
    }

    fn parallelism(&self) -> usize {
        self.threads()
    }
}

/// A shared implementation (a test keeps one handle on the fake the proxier programs).
impl<T: Nftables + ?Sized> Nftables for std::sync::Arc<T> {
    fn apply<'a>(&'a self, script: &'a str) -> BoxFuture<'a, Result<(), ApplyError>> {
        (**self).apply(script)
    }

    fn apply_all<'a>(&'a self, scripts: &'a [String]) -> BoxFuture<'a, Result<(), ApplyError>> {
        (**self).apply_all(scripts)
    }

    fn list_tables(&self, family: Family) -> BoxFuture<'_, Result<Vec<String>, ApplyError>> {
        (**self).list_tables(family)
    }

    fn parallelism(&self) -> usize {
        (**self).parallelism()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_of_a_listing() {
        let listing = "table ip filter\ntable ip nodelet\ntable ip6 nodelet\n";
        assert_eq!(table_names(listing, Family::V4), vec!["filter", "nodelet"]);
        assert_eq!(table_names(listing, Family::V6), vec!["nodelet"]);
    }
}
