//! Who is asking and may they: the kubelet's authentication (verified client certificate, then
//! a bearer token checked with a TokenReview, then anonymous if allowed) and authorization
//! (SubjectAccessReview or AlwaysAllow), with answers cached as the kubelet caches them.

use super::attributes::Attributes;
use super::AuthorizationMode;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const AUTHENTICATION_TTL: Duration = Duration::from_secs(120);
pub const AUTHORIZED_TTL: Duration = Duration::from_secs(300);
pub const UNAUTHORIZED_TTL: Duration = Duration::from_secs(30);

/// How long answers are kept: KubeletConfiguration's authentication.webhook.cacheTTL and
/// authorization.webhook.cacheAuthorizedTTL / cacheUnauthorizedTTL (defaults 2m, 5m, 30s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheTtls {
    pub authenticated: Duration,
    pub authorized: Duration,
    pub unauthorized: Duration,
}

impl Default for CacheTtls {
    fn default() -> Self {
        CacheTtls { authenticated: AUTHENTICATION_TTL, authorized: AUTHORIZED_TTL, unauthorized: UNAUTHORIZED_TTL }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    pub fn anonymous() -> User {
        User { name: "system:anonymous".into(), groups: vec!["system:unauthenticated".into()], ..Default::default() }
    }

    /// A client certificate's user: CN the name, O the groups (plus system:authenticated).
    pub fn from_certificate(cn: String, orgs: Vec<String>) -> User {
        let mut groups = orgs;
        groups.push("system:authenticated".into());
        User { name: cn, groups, ..Default::default() }
    }
}

/// Answers kept per cache: past it the oldest are dropped first.
const CACHE_CAPACITY: usize = 4096;

/// A bounded map whose entries expire. Insertion order is kept in a queue, so an insert drops
/// expired, superseded or surplus entries from its front in amortized constant time instead of
/// scanning the map.
struct Cache<K, V> {
    inner: Mutex<CacheInner<K, V>>,
    capacity: usize,
}

struct CacheInner<K, V> {
    entries: HashMap<K, CacheEntry<V>>,
    /// Keys in insertion order with the insertion's number; an entry re-inserted since has a
    /// later number, so its old place in the queue is stale.
    order: VecDeque<(K, u64)>,
    next: u64,
}

struct CacheEntry<V> {
    until: Instant,
    value: V,
    seq: u64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Self::with_capacity(CACHE_CAPACITY)
    }

    fn with_capacity(capacity: usize) -> Self {
        Cache { inner: Mutex::new(CacheInner { entries: HashMap::new(), order: VecDeque::new(), next: 0 }), capacity }
    }

    fn get(&self, k: &K) -> Option<V> {
        let inner = self.inner.lock().expect("auth cache poisoned");
        inner.entries.get(k).filter(|e| e.until > Instant::now()).map(|e| e.value.clone())
    }

    fn put(&self, k: K, v: V, ttl: Duration) {
        self.put_at(k, v, ttl, Instant::now());
    }

    fn put_at(&self, k: K, v: V, ttl: Duration, now: Instant) {
        let mut inner = self.inner.lock().expect("auth cache poisoned");
        let inner = &mut *inner;
        let seq = inner.next;
        inner.next += 1;
        inner.entries.insert(k.clone(), CacheEntry { until: now + ttl, value: v, seq });
        inner.order.push_back((k, seq));
        while let Some((front, seq)) = inner.order.front() {
            let live = inner.entries.get(front).filter(|e| e.seq == *seq);
            let surplus = inner.entries.len() > self.capacity || inner.order.len() > 2 * self.capacity;
            let drop = match live {
                None => true,
                Some(e) => e.until <= now || surplus,
            };
            if !drop {
                break;
            }
            if live.is_some() {
                inner.entries.remove(front);
            }
            inner.order.pop_front();
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.entries.len(), inner.order.len())
    }
}

pub struct Authenticator {
    anonymous: bool,
    token_reviews: Option<kube::Client>,
    ttl: Duration,
    /// sha256 of the token -> the user it names (None: not authenticated).
    cache: Cache<[u8; 32], Option<User>>,
}

impl Authenticator {
    pub fn new(anonymous: bool, token_reviews: Option<kube::Client>, ttl: Duration) -> Self {
        Authenticator { anonymous, token_reviews, ttl, cache: Cache::new() }
    }

    /// The request's user, or None for 401. `certificate` is the verified client certificate's
    /// user, `authorization` the Authorization header.
    pub async fn authenticate(&self, certificate: Option<&User>, authorization: Option<&str>) -> Option<User> {
        if let Some(u) = certificate {
            return Some(u.clone());
        }
        let token = authorization.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))).map(str::trim).filter(|t| !t.is_empty());
        if let (Some(token), Some(client)) = (token, &self.token_reviews) {
            // A token was offered and could not be checked or was refused: 401, not anonymous.
            return self.review_token(client, token).await;
        }
        self.anonymous.then(User::anonymous)
    }

    async fn review_token(&self, client: &kube::Client, token: &str) -> Option<User> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(answer) = self.cache.get(&key) {
            return answer;
        }
        let review = TokenReview { spec: TokenReviewSpec { token: Some(token.to_string()), ..Default::default() }, ..Default::default() };
        let api: Api<TokenReview> = Api::all(client.clone());
        let answer = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status.filter(|s| s.authenticated == Some(true)).and_then(|s| s.user).map(|u| User {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "TokenReview failed; the request is not authenticated");
                return None; // not cached: the next request asks again
            }
        };
        self.cache.put(key, answer.clone(), self.ttl);
        answer
    }
}

pub struct Authorizer {
    mode: AuthorizationMode,
    client: Option<kube::Client>,
    ttls: CacheTtls,
    cache: Cache<(User, String, &'static str, String), bool>,
}

impl Authorizer {
    pub fn new(mode: AuthorizationMode, client: Option<kube::Client>, ttls: CacheTtls) -> anyhow::Result<Self> {
        if mode == AuthorizationMode::Webhook && client.is_none() {
            anyhow::bail!("--authorization-mode=Webhook needs an apiserver (--kubeconfig) to send SubjectAccessReviews to");
        }
        Ok(Authorizer { mode, client, ttls, cache: Cache::new() })
    }

    /// Whether the user may: allowed when any of the attributes' subresources is allowed.
    /// Err when the apiserver could not be asked.
    pub async fn authorize(&self, user: &User, attrs: &Attributes) -> Result<bool, String> {
        let client = match (self.mode, &self.client) {
            (AuthorizationMode::AlwaysAllow, _) => return Ok(true),
            (AuthorizationMode::Webhook, Some(c)) => c,
            (AuthorizationMode::Webhook, None) => return Err("no apiserver client".into()),
        };
        for sub in &attrs.subresources {
            let key = (user.clone(), attrs.verb.clone(), *sub, attrs.name.clone());
            let allowed = match self.cache.get(&key) {
                Some(a) => a,
                None => {
                    let allowed = review_access(client, user, attrs, sub).await?;
                    self.cache.put(key, allowed, if allowed { self.ttls.authorized } else { self.ttls.unauthorized });
                    allowed
                }
            };
            if allowed {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

async fn review_access(client: &kube::Client, user: &User, attrs: &Attributes, sub: &str) -> Result<bool, String> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(attrs.verb.clone()),
                group: Some(String::new()),
                version: Some("v1".into()),
                resource: Some("nodes".into()),
                subresource: Some(sub.to_string()),
                name: Some(attrs.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(r) => Ok(r.status.is_some_and(|s| s.allowed)),
        Err(e) => Err(format!("SubjectAccessReview for {} on nodes/{sub}: {e}", user.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn certificate_then_anonymous() {
        let cert_user = User::from_certificate("alice".into(), vec!["devs".into()]);
        let a = Authenticator::new(false, None, AUTHENTICATION_TTL);
        assert_eq!(a.authenticate(Some(&cert_user), None).await.unwrap().groups, ["devs", "system:authenticated"]);
        assert_eq!(a.authenticate(None, None).await, None);
        // Without token webhook authentication a token means nothing: anonymous or 401.
        assert_eq!(a.authenticate(None, Some("Bearer abc")).await, None);
        let a = Authenticator::new(true, None, AUTHENTICATION_TTL);
        assert_eq!(a.authenticate(None, Some("Bearer abc")).await.unwrap().name, "system:anonymous");
        assert_eq!(a.authenticate(None, None).await.unwrap().groups, ["system:unauthenticated"]);
    }

    #[test]
    fn cache_entries_expire() {
        let c: Cache<u8, bool> = Cache::new();
        c.put(1, true, Duration::from_secs(60));
        c.put(2, false, Duration::ZERO);
        assert_eq!(c.get(&1), Some(true));
        assert_eq!(c.get(&2), None);
    }

    #[test]
    fn cache_drops_the_oldest_past_its_capacity_and_stays_bounded() {
        let c: Cache<u32, u32> = Cache::with_capacity(3);
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        for k in 0..5 {
            c.put_at(k, k, hour, now);
        }
        assert_eq!((c.get(&0), c.get(&1), c.get(&2), c.get(&4)), (None, None, Some(2), Some(4)));
        // re-inserting one key over and over neither evicts its new value nor grows the queue
        for v in 0..100 {
            c.put_at(4, v, hour, now);
        }
        assert_eq!(c.get(&4), Some(99));
        let (entries, queued) = c.len();
        assert!(entries <= 3 && queued <= 6, "{entries} entries, {queued} queued");
    }

    #[test]
    fn expired_entries_leave_on_later_inserts() {
        let c: Cache<u32, u32> = Cache::with_capacity(100);
        let now = Instant::now();
        for k in 0..10 {
            c.put_at(k, k, Duration::from_secs(1), now);
        }
        c.put_at(99, 99, Duration::from_secs(60), now + Duration::from_secs(2));
        assert_eq!(c.len(), (1, 1));
    }

    #[tokio::test]
    async fn always_allow_allows() {
        let z = Authorizer::new(AuthorizationMode::AlwaysAllow, None, CacheTtls::default()).unwrap();
        let attrs = super::super::attributes::request_attributes("POST", "/exec/a/b/c", "n");
        assert!(z.authorize(&User::anonymous(), &attrs).await.unwrap());
        assert!(Authorizer::new(AuthorizationMode::Webhook, None, CacheTtls::default()).is_err());
    }
}
