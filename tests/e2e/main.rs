//! End-to-end tests: real memcached processes, an origin app on loopback and etagd replicas started in process,
//! talking HTTP over loopback. One module per topic; shared fixtures live in [`support`].
//!
//! | module | proves |
//! |---|---|
//! | `sharing` | replicas share one fill, one validator, 304s and HEAD hits |
//! | `headers` | Cache-Status and Age, etagd's own headers and hop-by-hop fields stripped |
//! | `storage_rules` | bodies over `--max-body-bytes` pass whole; a session cookie never gets a route rule's shared page |
//! | `streaming_fills` | a large miss streams to its client while stored; disconnects and waiters past `--fill-wait` |
//! | `large_json` | 8 and 40 MiB JSON filled once for two replicas, identity only above `--compress-max-bytes`, the sidecar's memory under 16 downloads |
//! | `large_bodies` | bodies over one item stored in chunks: shared, ranged, refilled on eviction, invalidated, admitted |
//! | `invalidation` | URL, tag, all, unsafe methods, origin headers; the late-fill race |
//! | `authentication` | with `--entry-key`, items forged in Memcached are misses, never served |
//! | `admin` | metrics, entries, bad requests, the admin token |
//! | `stale` | a soft invalidation serves the old body during one refresh |
//! | `fleet` | fleet-wide single flight, and no serialising behind uncacheable answers |
//! | `compose` | the docker-compose fleet's settings share validators across replicas |
//! | `etagctl` | the CLI against a real sidecar's admin API and the same Memcached |
//! | `timeouts` | a memcached that stops answering mid-batch fails no request |
//! | `parity` | the sidecar and the tower layer answer one table of cases alike |
//! | `conformance` | RFC 9111, 9110, 9213 and 5861 requirements, one table per section, through both fronts |
//! | `table` | the one runner behind `parity` and `conformance` |
//! | `failover` | memcached servers dying: the origin answers, the rest of the cache keeps working |
//! | `hygiene` | slow request heads closed, oversized heads 431, the in-flight cap 503, stalled origin bodies cut |
//! | `revalidation` | a 304 or a HEAD answer updates the stored response's replayed fields (RFC 9111 4.3.4, 4.3.5) |
//! | `upgrade` | the landed release and this one side by side: an invalidation through either reaches both |
//! | `prometheus` | a real Prometheus server scrapes etagd and its query API returns requests by outcome |
//! | `operator` | route `ttl_override`/`ttl_max`, negative caching of 404/410, purges by path prefix (admin API, etagctl, the layer) |

mod access_log;
mod admin;
mod authentication;
mod compose;
mod compression;
mod conformance;
mod etagctl;
mod failover;
mod fleet;
mod headers;
mod hygiene;
mod invalidation;
mod large_bodies;
mod large_json;
mod operator;
mod parity;
mod prometheus;
mod revalidation;
mod sharing;
mod stale;
mod storage_rules;
mod streaming_fills;
mod support;
mod table;
mod timeouts;
mod upgrade;
