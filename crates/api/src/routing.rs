//! Traffic routing as pure functions: the route table of each Service port, compiled from
//! Istio `VirtualService`s and Gateway API routes, and the per-request choice of a rule.
//! No I/O, no clock, no randomness of its own; the control plane compiles, the proxy
//! selects, and both share these types.
//!
//! - The model ([`RouteTable`]): per Service *port*, HTTP rules in match order (conditions on
//!   path, method, authority, scheme, headers, query parameters and the caller; an action —
//!   forward to weighted destinations, redirect, or respond; filters — header changes,
//!   rewrite, mirrors, faults, timeouts, retries), TCP rules, and Gateway API consumer
//!   routes. Serializable: snapshots carry each Service's table as JSON
//!   (`Service.routes_json` in `proto/control.proto`), checked again when decoded
//!   ([`RouteTable::validate`], plus every regex, header name and value as it is
//!   deserialized).
//! - [`compile()`]: every Service's table from a config's resources, with warnings for what
//!   only several resources together reveal (an unknown parent Service, a VirtualService
//!   overridden by an HTTPRoute). [`unsupported`] lists what one resource asks for that the
//!   model cannot do.
//! - [`select()`] / [`select_tcp`]: the rule for a request or connection, a first-match scan
//!   of the pre-ordered conditions.
//! - [`rewrite_path`], [`redirect_location`], [`pick_weighted`], [`chance`],
//!   [`HeaderOps::apply`]: what the proxy does once a rule is selected.
//!
//! # Order and precedence
//!
//! A VirtualService's `http` routes keep their order, and within a route its `match` list:
//! the first condition that holds wins, as in Istio. Gateway API routes attached to one
//! Service port are ranked per *match* (not per rule), strongest first, by the spec's
//! criteria: an Exact path; then the longest PathPrefix (a RegularExpression path ranks
//! below every prefix, as Istio ranks it); then a method match; then the most header
//! matches; then the most query parameter matches. Ties go to the oldest route — Trellis
//! reads config from files, which carry no creation time, so the route loaded first (path
//! order of the files, then document order) counts as oldest — then to `namespace/name` in
//! alphabetical order, then to rule order, then match order. GRPCRoute matches rank by the
//! length of the service, then of the method, then the number of header matches, and come
//! before HTTPRoute matches on the same port. Once any route is attached to a port, a
//! request no condition matches is answered 404 ([`Selection::NoMatch`]).
//!
//! # VirtualService and Gateway API routes for the same Service
//!
//! Istio does not define how the two combine in the mesh, and does not merge them. Trellis
//! lets the Gateway API win, port by port: where an HTTPRoute or GRPCRoute from the
//! Service's own namespace attaches to a port, the VirtualService's `http` routes are not
//! used for that port (a warning names both); a TCPRoute replaces the VirtualService's
//! `tcp` routes likewise. Ports no Gateway API route attaches to keep the VirtualService's
//! routes. Gateway API consumer routes (from another namespace) apply only to clients in
//! their namespace, and replace whatever those clients would otherwise get. Only one
//! VirtualService routes a host, the first loaded, as Istio keeps one per host for sidecars.

mod actions;
mod compile;
mod header;
mod model;
mod pattern;
mod select;
mod support;
mod validate;

pub use actions::{chance, pick_weighted, redirect_location, rewrite_path, RedirectRequest};
pub use compile::{compile, service_host, MeshRoutes};
pub use header::{HeaderError, HeaderKey, HeaderText};
pub use model::{
    Abort, AbortStatus, Action, Backend, ConsumerRoutes, Delay, DirectResponse, Fault, Filters,
    HeaderMatch, HeaderOps, HeaderPair, HttpRoutes, HttpRule, MatchEntry, Mirror, PathMatch,
    PathRewrite, PortRoutes, QueryMatch, Redirect, RedirectPort, RequestMatch, RetryOn,
    RetryPolicy, Rewrite, RouteKind, RouteTable, RuleName, SourceMatch, StrMatch, TcpRoutes,
    TcpRule, ValueMatch, WeightedDestination,
};
pub use pattern::{Pattern, PatternError, RewritePattern};
pub use select::{select, select_tcp, RequestView, Selected, Selection, Source};
pub use support::unsupported;
pub use validate::{RouteTableError, RuleProblem};
