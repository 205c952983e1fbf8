//! Codings made on first demand (`exchange/codings.rs`, `cache/codings.rs`): each stored coding is its own
//! representation with its own validator (RFC 9110 sections 8.4, 8.8.3 and 12.5.3), made once per fill.

use std::io::Read;

use super::*;
use crate::cache::{CommitError, Invalidation, Lookup, LookupRequest};
use crate::encoding::CompressionPolicy;
use crate::key::ResourceKey;

const JSON: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("content-type", "application/json")];
const GZIP_BR: &[(&str, &str)] = &[("accept-encoding", "gzip, br")];

fn body() -> &'static str {
    static BODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BODY.get_or_init(|| r#"{"id":1,"name":"server-1","region":"eu-west"},"#.repeat(60))
}

fn coding(got: &Got) -> &str {
    got.headers.get("content-encoding").map_or("identity", |v| v.to_str().unwrap())
}

fn etag(got: &Got) -> String {
    got.headers["etag"].to_str().unwrap().to_owned()
}

/// Waits (bounded) until `fixtures` together added `count` codings.
async fn codings_added(fixtures: &[&Fixture], count: u64) {
    for _ in 0..500 {
        let added: u64 = fixtures.iter().map(|f| f.exchange.cache().counters().codings_added).sum();
        if added >= count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("{count} codings were not added");
}

/// A fill stores identity and gzip; a client that prefers br gets gzip at once (a stored representation,
/// with its own tag), and br is made from the stored body, once, for the clients after it: each with a tag
/// of the one fill, and no second origin request.
#[tokio::test]
async fn a_coding_first_wanted_on_a_hit_is_made_once_for_the_clients_after() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, JSON, body());
    let miss = f.get("/a", &[]).await;
    assert_eq!(coding(&miss), "identity", "the first client gets what the origin sent");
    let base = etag(&miss);

    let first = f.get("/a", GZIP_BR).await;
    assert_eq!((first.status, coding(&first)), (200, "gzip"), "br is not stored yet");
    assert_eq!(etag(&first), format!("{}-gzip\"", base.trim_end_matches('"')));
    codings_added(&[&f], 1).await;

    let next = f.get("/a", GZIP_BR).await;
    assert_eq!((next.status, coding(&next), next.cache_status()), (200, "br", "etagd; hit; ttl=60"));
    assert_eq!(etag(&next), format!("{}-br\"", base.trim_end_matches('"')));
    let mut decoded = Vec::new();
    brotli::BrotliDecompress(&mut &next.body[..], &mut decoded).expect("a valid br body");
    assert_eq!(decoded, body().as_bytes());
    assert_eq!(next.headers["vary"], "Accept-Encoding");

    // RFC 9110 section 13.1.2: the br representation's own tag gets a 304; gzip's still names gzip.
    let revalidated = f.get("/a", &[("accept-encoding", "gzip, br"), ("if-none-match", &etag(&next))]).await;
    assert_eq!(revalidated.status, 304);
    let gzip_client = f.get("/a", &[("accept-encoding", "gzip"), ("if-none-match", &etag(&first))]).await;
    assert_eq!(gzip_client.status, 304);
    let mut gunzipped = Vec::new();
    let plain_gzip = f.get("/a", &[("accept-encoding", "gzip")]).await;
    flate2::read::GzDecoder::new(&plain_gzip.body[..]).read_to_end(&mut gunzipped).unwrap();
    assert_eq!(gunzipped, body().as_bytes());

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(f.exchange.cache().counters().codings_added, 1, "made once");
    assert_eq!(f.upstream.calls(), 1, "made from the stored body, not by asking the origin");
}

/// Two replicas over one store: the coding one replica's client wanted is served by the other one too, and
/// made by one of them only.
#[tokio::test]
async fn a_coding_made_on_one_replica_is_served_by_every_replica() {
    let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::new(16 << 20));
    let a = fixture_on(store.clone(), ExchangeConfig::default());
    let b = fixture_on(store, ExchangeConfig::default());
    a.upstream.answer(200, JSON, body());
    assert_eq!(a.get("/a", &[]).await.status, 200);
    assert_eq!(coding(&b.get("/a", &[("accept-encoding", "zstd, gzip")]).await), "gzip");
    assert_eq!(coding(&a.get("/a", &[("accept-encoding", "zstd, gzip")]).await), "gzip", "no claim twice");
    codings_added(&[&a, &b], 1).await;
    let from_a = a.get("/a", &[("accept-encoding", "zstd")]).await;
    assert_eq!(coding(&from_a), "zstd");
    assert_eq!(zstd::decode_all(&from_a.body[..]).unwrap(), body().as_bytes());
    assert_eq!(coding(&b.get("/a", &[("accept-encoding", "zstd")]).await), "zstd");
    let added = a.exchange.cache().counters().codings_added + b.exchange.cache().counters().codings_added;
    assert_eq!(added, 1, "one replica made it");
    assert_eq!(a.upstream.calls() + b.upstream.calls(), 1);
}

/// An addition is conditional on the entry the hit read (RFC 9111 section 4.4: an invalidated response is never
/// served again): after the URL is invalidated, or another addition replaced the entry, it stores nothing.
#[tokio::test]
async fn an_addition_never_revives_or_overwrites_a_changed_entry() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, JSON, body());
    f.get("/a", &[]).await;
    let cache = f.exchange.cache().clone();
    let resource = ResourceKey::new("http", "shop.example", "/a");
    let headers = HeaderMap::new();
    let request = LookupRequest { resource: &resource, headers: &headers, route_tags: &[] };
    let Lookup::Hit(hit) = cache.lookup(request).await else { panic!("a hit") };
    assert_eq!(hit.meta.codings, ["gzip"]);

    assert!(cache.claim_coding(&hit, "br").await);
    assert!(!cache.claim_coding(&hit, "br").await, "claimed once per fill and coding");
    let br = Bytes::from_static(b"br bytes");
    assert_eq!(cache.add_coding(&hit, "br", br.clone()).await.unwrap().codings, ["gzip", "br"]);
    assert!(
        matches!(cache.add_coding(&hit, "zstd", br.clone()).await, Err(CommitError::Raced)),
        "the entry changed since this hit read it"
    );

    let Lookup::Hit(current) = cache.lookup(request).await else { panic!("a hit") };
    assert_eq!(current.meta.codings, ["gzip", "br"]);
    let invalidation = Invalidation { urls: vec!["http://shop.example/a".into()], ..Invalidation::default() };
    cache.invalidate(&invalidation).await.unwrap();
    assert!(cache.claim_coding(&current, "zstd").await);
    assert!(matches!(cache.add_coding(&current, "zstd", br).await, Err(CommitError::Raced)), "invalidated meanwhile");
    f.upstream.answer(200, JSON, "v2");
    let after = f.get("/a", GZIP_BR).await;
    assert_eq!((after.body.as_ref(), f.upstream.calls()), (&b"v2"[..], 2), "a miss, not the old entry");
}

/// With codings on demand off every configured coding is made with the fill, as before.
#[tokio::test]
async fn with_on_demand_off_every_coding_is_made_with_the_fill() {
    let compression = CompressionPolicy { on_demand: false, ..CompressionPolicy::default() };
    let f = fixture(ExchangeConfig { compression, ..ExchangeConfig::default() });
    f.upstream.answer(200, JSON, body());
    f.get("/a", &[]).await;
    assert_eq!(coding(&f.get("/a", GZIP_BR).await), "br");
    assert_eq!(coding(&f.get("/a", &[("accept-encoding", "zstd")]).await), "zstd");
    assert_eq!(f.exchange.cache().counters().codings_added, 0);
}

/// A small miss's coding is made before its answer, so the filling client gets the representation it asks for
/// (RFC 9110 section 12.5.3), under the tag every later client of that coding gets (section 8.8.3).
#[tokio::test]
async fn the_filling_client_of_a_small_body_gets_its_coding() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, JSON, body());
    let miss = f.get("/a", GZIP_BR).await;
    assert_eq!(miss.report.outcome, Outcome::Miss(Filled::Stored));
    assert_eq!((miss.status, coding(&miss)), (200, "gzip"), "gzip is the coding made with the fill");
    assert_eq!(miss.headers["vary"], "Accept-Encoding");
    assert_eq!(miss.headers["content-length"], miss.body.len().to_string().as_str());
    let mut gunzipped = Vec::new();
    flate2::read::GzDecoder::new(&miss.body[..]).read_to_end(&mut gunzipped).unwrap();
    assert_eq!(gunzipped, body().as_bytes());

    let hit = f.get("/a", &[("accept-encoding", "gzip")]).await;
    assert_eq!((coding(&hit), etag(&hit)), ("gzip", etag(&miss)), "the fill's answer named the stored gzip");
    assert_eq!(hit.body, miss.body);
    let revalidated = f.get("/a", &[("accept-encoding", "gzip"), ("if-none-match", &etag(&miss))]).await;
    assert_eq!(revalidated.status, 304);
    let identity = f.get("/a", &[]).await;
    assert_eq!(identity.body.as_ref(), body().as_bytes());
    assert_eq!(format!("{}-gzip\"", etag(&identity).trim_end_matches('"')), etag(&miss));
    assert_eq!(f.upstream.calls(), 1);
}

/// A Vary variant (RFC 9110 section 12.5.5) gets its coding in its own entry: the other variant is untouched.
#[tokio::test]
async fn a_variant_gets_its_coding_in_its_own_entry() {
    let f = fixture(ExchangeConfig::default());
    let varying = &[("cache-control", "max-age=60"), ("content-type", "application/json"), ("vary", "accept-language")];
    f.upstream.answer(200, varying, body()).answer(200, varying, body());
    let de = [("accept-language", "de"), ("accept-encoding", "gzip, br")];
    let fr = [("accept-language", "fr"), ("accept-encoding", "gzip, br")];
    f.get("/a", &[("accept-language", "de")]).await;
    f.get("/a", &[("accept-language", "fr")]).await;
    assert_eq!(f.upstream.calls(), 2, "one fill per variant");
    assert_eq!(coding(&f.get("/a", &de).await), "gzip");
    codings_added(&[&f], 1).await;
    let german = f.get("/a", &de).await;
    assert_eq!((coding(&german), german.cache_status()), ("br", "etagd; hit; ttl=60"));
    let vary: Vec<String> =
        german.headers.get_all("vary").iter().map(|v| v.to_str().unwrap().to_ascii_lowercase()).collect();
    let vary = vary.join(", ");
    assert!(vary.contains("accept-language") && vary.contains("accept-encoding"), "{vary}");
    let french = f.get("/a", &fr).await;
    assert_eq!(coding(&french), "gzip", "the other variant has not asked for br yet");
    codings_added(&[&f], 2).await;
    assert_eq!(coding(&f.get("/a", &fr).await), "br");
    assert_eq!(coding(&f.get("/a", &de).await), "br");
    assert_eq!(f.upstream.calls(), 2);
}
