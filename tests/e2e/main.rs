//! End-to-end tests: real memcached processes, an origin app on loopback and etagd replicas started in process,
//! talking HTTP over loopback. One module per topic; shared fixtures live in [`support`].
//!
//! | module | proves |
//! |---|---|
//! | `sharing` | replicas share one fill, one validator, 304s and HEAD hits |
//! | `headers` | Cache-Status and Age, etagd's own headers and hop-by-hop fields stripped |
//! | `storage_rules` | what must not be stored is not; big bodies pass whole |
//! | `vary` | variants are kept apart |
//! | `invalidation` | URL, tag, all, unsafe methods, origin headers; the late-fill race |
//! | `admin` | metrics, entries, bad requests, the admin token |
//! | `stale` | stale-while-revalidate, stale-if-error, soft invalidation |
//! | `fleet` | fleet-wide single flight, and no serialising behind uncacheable answers |
//! | `compose` | the docker-compose fleet's settings share validators across replicas |
//! | `etagctl` | the CLI against a real sidecar's admin API and the same Memcached |
//! | `timeouts` | a memcached that stops answering mid-batch fails no request |
//! | `parity` | the sidecar and the tower layer answer one table of cases alike |
//! | `failover` | memcached servers dying: the origin answers, the rest of the cache keeps working |
//! | `hygiene` | slow request heads closed, oversized heads 431, the in-flight cap 503, stalled origin bodies cut |
//! | `prometheus` | a real Prometheus server scrapes etagd and its query API returns requests by outcome |
//! | `operator` | route `ttl_override`/`ttl_max`, negative caching of 404/410, purges by path prefix (admin API, etagctl, the layer) |

mod admin;
mod compose;
mod compression;
mod etagctl;
mod failover;
mod fleet;
mod headers;
mod hygiene;
mod invalidation;
mod operator;
mod parity;
mod prometheus;
mod sharing;
mod stale;
mod storage_rules;
mod support;
mod timeouts;
mod vary;
