//! HTTP semantics: routing, methods, conditional and range requests, listings. The order of
//! checks of SPEC section 4 is [`App::respond`] and [`App::resource`], read top to bottom:
//! parse (400) → method known (501) → path valid (400) → credentials (401) → rules
//! (403/404) → method allowed here (405) → payment (402) → body limits (413) →
//! preconditions (304/412) → the action.
//!
//! Errors become responses in exactly one place, [`problem`].

mod admin;
mod body;
pub mod client;
mod compress;
pub mod conditional;
mod dav;
pub mod framing;
pub mod inbound;
mod listing;
mod logged;
pub mod media;
pub mod page;
pub mod payment;
pub mod problem;
pub mod range;
mod read;
mod upload;
mod write;

use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use http::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, ETAG, HeaderMap,
    HeaderName, HeaderValue, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE,
    LAST_MODIFIED, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use inbound::Inbound;
use serde_json::json;

use crate::access::{Action, Decision, Principal};
use crate::auth::{Authenticator, Failure};
use crate::config::Settings;
use crate::meter::Meter;
use crate::metrics::Metrics;
use crate::path::ResourcePath;
use crate::state::State;
use crate::store::{Entry, Put, Store};
use crate::telemetry::RequestIds;
use conditional::Validators;
use logged::{Logged, Record};
use problem::{Problem, Slug};

pub use body::{Body, empty, full};

/// The request header that names the request id in the response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The methods larder implements; anything else is 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET
    Get,
    /// HEAD
    Head,
    /// PUT
    Put,
    /// POST
    Post,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// PROPFIND (WebDAV)
    Propfind,
    /// PROPPATCH (WebDAV)
    Proppatch,
    /// MKCOL (WebDAV)
    Mkcol,
    /// COPY (WebDAV)
    Copy,
    /// MOVE (WebDAV)
    Move,
    /// LOCK (WebDAV)
    Lock,
    /// UNLOCK (WebDAV)
    Unlock,
}

impl Verb {
    fn parse(method: &Method) -> Option<Verb> {
        Some(match *method {
            Method::GET => Verb::Get,
            Method::HEAD => Verb::Head,
            Method::PUT => Verb::Put,
            Method::POST => Verb::Post,
            Method::DELETE => Verb::Delete,
            Method::OPTIONS => Verb::Options,
            Method::TRACE => Verb::Trace,
            _ => match method.as_str() {
                "PROPFIND" => Verb::Propfind,
                "PROPPATCH" => Verb::Proppatch,
                "MKCOL" => Verb::Mkcol,
                "COPY" => Verb::Copy,
                "MOVE" => Verb::Move,
                "LOCK" => Verb::Lock,
                "UNLOCK" => Verb::Unlock,
                _ => return None,
            },
        })
    }

    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Head => "HEAD",
            Verb::Put => "PUT",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
            Verb::Options => "OPTIONS",
            Verb::Trace => "TRACE",
            Verb::Propfind => "PROPFIND",
            Verb::Proppatch => "PROPPATCH",
            Verb::Mkcol => "MKCOL",
            Verb::Copy => "COPY",
            Verb::Move => "MOVE",
            Verb::Lock => "LOCK",
            Verb::Unlock => "UNLOCK",
        }
    }

    /// True for the WebDAV methods.
    fn is_dav(self) -> bool {
        matches!(
            self,
            Verb::Propfind
                | Verb::Proppatch
                | Verb::Mkcol
                | Verb::Copy
                | Verb::Move
                | Verb::Lock
                | Verb::Unlock
        )
    }
}

/// An `Allow` value and the matching 405.
pub fn method_not_allowed(verb: Verb, allow: &[Verb]) -> Problem {
    Problem::new(Slug::MethodNotAllowed, format!("{} is not allowed here.", verb.as_str()))
        .header(ALLOW, allow_value(allow))
}

/// The `Allow` field for these methods.
pub fn allow_value(allow: &[Verb]) -> HeaderValue {
    let text = allow.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("GET, HEAD"))
}

/// Credential fields a TRACE never echoes.
const SECRET_FIELDS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "payment-signature",
    "x-payment",
    "x-auth-token",
];

/// What the access log records about a request beyond its line.
#[derive(Default)]
struct Trail {
    account: Option<std::sync::Arc<str>>,
}

/// The configuration in force: settings and the plans derived from them, replaced whole by
/// [`App::reload`]. Derefs to the settings.
pub struct Live {
    /// The settings.
    pub settings: Settings,
    /// Their plans, by account.
    pub meter: Meter,
}

impl std::ops::Deref for Live {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// The application: settings, store and verifier, answering one request at a time.
pub struct App<S: Store> {
    live: ArcSwap<Live>,
    store: S,
    state: Arc<State>,
    auth: Authenticator,
    ids: RequestIds,
    metrics: Arc<Metrics>,
}

enum Target {
    /// `OPTIONS *`.
    Star,
    /// `/.larder/…`, with the segments after `.larder`.
    Larder(Vec<String>),
    Resource(ResourcePath),
}

impl<S: Store> App<S> {
    /// Builds the application.
    pub fn new(settings: Settings, store: S, state: Arc<State>) -> Self {
        let auth = Authenticator::new(&settings, state.clone());
        let meter = Meter::new(&settings);
        App {
            live: ArcSwap::from_pointee(Live { settings, meter }),
            store,
            state,
            auth,
            ids: RequestIds::new(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The configuration in force (a snapshot: a reload does not change it under the caller).
    pub fn settings(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Puts the accounts, plans, rules and other per-request settings of `new` in force for
    /// every request that starts from now on; the sockets, folders and limits read at start
    /// stay as they are. Returns the keys that changed but need a restart.
    pub fn reload(&self, new: Settings) -> Vec<&'static str> {
        let old = self.settings();
        let (settings, ignored) = old.settings.reloaded(new);
        crate::state::set_dependency_timeout(settings.dependency_timeout);
        let meter = Meter::new(&settings);
        self.auth.reload(&settings);
        self.live.store(Arc::new(Live { settings, meter }));
        ignored
    }

    /// The counters `/.larder/metrics` shows.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Drops a revoked token from memory at once.
    pub fn forget_token(&self, id: &str) {
        self.auth.forget_token(id);
    }

    /// Runs `work` on the state database off the async workers; a database error is a 500
    /// (logged), a panic stays a panic.
    pub async fn state_call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&State) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Problem> {
        let state = self.state.clone();
        let task = tokio::task::spawn_blocking(move || work(&state));
        // A frozen database costs a request no more than this; the thread ends when it can.
        let Ok(done) = tokio::time::timeout(crate::state::dependency_timeout(), task).await else {
            tracing::warn!("the database did not answer in time");
            return Err(Problem::dependency_down("database"));
        };
        match done {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => match crate::state::Unavailable::of(&e) {
                Some(down) => {
                    tracing::warn!("{down}");
                    Err(Problem::dependency_down(down.dependency))
                }
                None => {
                    tracing::error!("state database: {e}");
                    Err(Problem::internal())
                }
            },
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Problem::internal()),
        }
    }

    /// Answers one request from `peer`. Never fails: errors and panics become problem
    /// documents.
    pub async fn handle(
        &self,
        request: Request<hyper::body::Incoming>,
        peer: IpAddr,
    ) -> Response<Body> {
        let http2 = request.version() == Version::HTTP_2;
        let request = request.map(|body| Inbound::new(body, http2));
        let started = Instant::now();
        let id = self.ids.next();
        let method = request.method().clone();
        let target = request.uri().clone();
        let authorized = request.headers().contains_key(AUTHORIZATION);
        let cookie = crate::auth::has_token_cookie(request.headers().get_all(COOKIE).iter());
        let mut trail = Trail::default();
        let outcome =
            AssertUnwindSafe(self.respond(request, peer, &mut trail)).catch_unwind().await;
        let mut response = match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(problem)) => problem.into_response(&id),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(request_id = %id, "handler panicked: {why}");
                Problem::internal().into_response(&id)
            }
        };
        // A HEAD is answered with GET's head and no body, whatever the answer (its
        // Content-Length stays: the size GET's body would have). HTTP/1 writes none anyway;
        // HTTP/2 would send the body's DATA, and the client end the stream in error.
        if method == Method::HEAD {
            let (parts, _) = response.into_parts();
            response = Response::from_parts(parts, empty());
        }
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(REQUEST_ID, value);
        }
        // An answer to a request that presented credentials may depend on them, whatever its
        // status (a 301 or 404 tells of what the caller may see): shared caches keep out.
        // 401, 402 and 403 say `no-store` already.
        if (authorized || cookie || trail.account.is_some()) && !headers.contains_key(CACHE_CONTROL)
        {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("private"));
        }
        // Without Authorization, a GET or HEAD is answered as the page's cookie says: a
        // cache must key it by the cookie too.
        if !authorized && matches!(method, Method::GET | Method::HEAD) {
            vary_cookie(headers);
        }
        if let Some(down) = response.extensions().get::<problem::DependencyDown>() {
            self.metrics.dependency_down(down.0);
        }
        let record = Record {
            id,
            method,
            target,
            status: response.status().as_u16(),
            account: trail.account,
            started,
        };
        let (parts, body) = response.into_parts();
        Response::from_parts(
            parts,
            BodyExt::boxed_unsync(Logged::new(body, record, self.metrics.clone())),
        )
    }

    /// SPEC §4, one named step per line: parse (400) → method known (501) → path valid (400)
    /// → credentials (401) → rules (403/404) → method allowed here (405) → payment (402) →
    /// body limits (413) → preconditions (304/412) → the action. The steps after the rules
    /// are in [`App::resource`]; body limits and preconditions are the writes' admission
    /// (`write.rs`) and the reads' conditions (`read.rs`), both before any body moves.
    async fn respond(
        &self,
        request: Request<Inbound>,
        peer: IpAddr,
        trail: &mut Trail,
    ) -> Result<Response<Body>, Problem> {
        framing::check(&request)?;
        let verb = known_method(request.method())?;
        let target = parse_target(verb, request.uri())?;
        let identity = self.credentials(verb, &request, peer).await?;
        trail.account = identity.principal.account.clone();
        match target {
            Target::Star => Ok(options_star(self.settings().trace)),
            Target::Larder(rest) => {
                Box::pin(admin::respond(self, &identity, verb, &rest, request)).await
            }
            Target::Resource(path) => self.resource(verb, path, identity.principal, request).await,
        }
    }

    /// Credentials (401): `Authorization`, or for GET and HEAD without it, the page's cookie.
    async fn credentials(
        &self,
        verb: Verb,
        request: &Request<Inbound>,
        peer: IpAddr,
    ) -> Result<crate::auth::Identity, Problem> {
        let authorization = request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        match authorization {
            None if matches!(verb, Verb::Get | Verb::Head) => {
                Ok(self.auth.from_cookies(request.headers().get_all(COOKIE).iter()).await)
            }
            _ => {
                let address =
                    client::address(request.headers(), peer, &self.settings().trusted_proxies);
                self.auth.authenticate(authorization, address).await.map_err(|failure| {
                    if failure == Failure::Unavailable {
                        return Problem::dependency_down("database");
                    }
                    self.metrics.sign_in_failed(failure);
                    unauthenticated(&self.settings().realm, Some(failure))
                })
            }
        }
    }

    /// The one function that decides access for a path: every path a request touches (its
    /// target, each missing parent a PUT creates, each name a POST chooses or a multipart
    /// part asks for, what a collection's removal takes) passes here or through
    /// [`App::authorize_beneath`], which asks the same rules.
    pub(crate) fn authorize(
        &self,
        principal: &Principal,
        path: &ResourcePath,
        action: Action,
    ) -> Result<(), Problem> {
        self.refusal(self.settings().rules.decide(principal, path.segments(), action))
    }

    /// What a decision answers.
    fn refusal(&self, decision: Decision) -> Result<(), Problem> {
        match decision {
            Decision::Allow => Ok(()),
            Decision::Unauthenticated => Err(unauthenticated(&self.settings().realm, None)),
            Decision::Forbidden => Err(forbidden("This account may not do this here.")),
            Decision::Hidden => Err(Problem::not_found()),
            Decision::OutOfScope => Err(out_of_scope(&self.settings().realm)),
        }
    }

    /// Whether `principal` may do `action` to everything that may be beneath the collection
    /// at `path`, decided from the rules alone, so the answer is the same whatever is there
    /// (hidden children included). A rule beneath that hides its paths from the caller
    /// refuses with 403 (401 when anonymous), not 404: the collection itself is known.
    fn authorize_beneath(
        &self,
        principal: &Principal,
        path: &ResourcePath,
        action: Action,
    ) -> Result<(), Problem> {
        let rules = &self.settings().rules;
        match rules.decide_beneath(principal, path.segments(), action) {
            Decision::Allow => Ok(()),
            Decision::Hidden | Decision::Forbidden if principal.account.is_some() => {
                Err(forbidden(
                    "Rules beneath this collection keep this account from removing all that may be \
                 in it; nothing was removed.",
                ))
            }
            Decision::Hidden => Err(unauthenticated(&self.settings().realm, None)),
            other => self.refusal(other),
        }
    }

    /// Rules (403/404) before the store is touched: `Ok(true)` when the verb is allowed
    /// whatever is at `path`, `Ok(false)` when the decision depends on what is there (read a
    /// resource or list a collection; create or update), `Err` when it is refused whatever is
    /// there. A hidden resource and a missing one are refused here, alike, without a look.
    fn authorize_before_store(
        &self,
        verb: Verb,
        path: &ResourcePath,
        principal: &Principal,
    ) -> Result<bool, Problem> {
        let actions: &[Action] = match verb {
            Verb::Get | Verb::Head | Verb::Options | Verb::Trace => &[Action::Read, Action::List],
            Verb::Put => &[Action::Create, Action::Update],
            Verb::Post => &[Action::Create],
            Verb::Delete => &[Action::Delete],
            Verb::Propfind | Verb::Copy | Verb::Unlock => &[Action::Read, Action::List],
            Verb::Proppatch => &[Action::Update],
            Verb::Mkcol => &[Action::Create],
            Verb::Lock => &[Action::Create, Action::Update],
            // MOVE: reading its source, then the rest in `dav::transfer`.
            Verb::Move => &[Action::Read, Action::List],
        };
        let rules = &self.settings().rules;
        let decide = |action| rules.decide(principal, path.segments(), action);
        let first = decide(actions[0]);
        if actions[1..].iter().any(|&action| decide(action) != first) {
            return Ok(false);
        }
        self.refusal(first)?;
        // A collection's removal takes what is beneath it: decided from the rules too (so
        // that `409 not empty` never tells of children the caller may not know).
        if verb == Verb::Delete && path.is_collection() {
            self.authorize_beneath(principal, path, Action::Delete)?;
        }
        Ok(true)
    }

    /// Each missing parent a PUT at `path` would create must be one `principal` may create.
    /// From the rules first: only the deepest ancestor it may not create is looked up, and
    /// only when there is one.
    async fn authorize_parents(
        &self,
        principal: &Principal,
        path: &ResourcePath,
    ) -> Result<(), Problem> {
        let mut ancestor = path.parent();
        while !ancestor.is_root() {
            if let Err(refused) = self.authorize(principal, &ancestor, Action::Create) {
                return match self.store.open(&ancestor).await? {
                    Some(_) => Ok(()),
                    None => Err(refused),
                };
            }
            ancestor = ancestor.parent();
        }
        Ok(())
    }

    /// Whether a PUT of a resource can go straight to the store, without first looking up
    /// what is there: when nothing decided before the store's own checks depends on it. The
    /// principal may both create and update here (`decided`), no plan meters storage (so no
    /// quota depends on the current owner), and no precondition needs the current version
    /// before the store evaluates it. A collection in the way is still refused (409) by the
    /// store.
    fn put_needs_no_lookup(
        &self,
        decided: bool,
        path: &ResourcePath,
        request: &Request<Inbound>,
    ) -> bool {
        let headers = request.headers();
        decided
            && !path.is_collection()
            && self.settings().meter.quotas().is_empty()
            && self.no_locks()
            && ![IF_MATCH, IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_UNMODIFIED_SINCE]
                .iter()
                .any(|name| headers.contains_key(name))
            && !headers.contains_key("if")
    }

    fn allowed(&self, entry: &Entry) -> Vec<Verb> {
        let mut allow = Vec::with_capacity(7);
        allow.extend([Verb::Get, Verb::Head, Verb::Put]);
        if entry.is_collection() {
            allow.push(Verb::Post);
        }
        if !entry.path.is_root() {
            allow.push(Verb::Delete);
        }
        allow.push(Verb::Options);
        if self.settings().trace {
            allow.push(Verb::Trace);
        }
        allow.extend([Verb::Propfind, Verb::Proppatch, Verb::Copy]);
        if !entry.path.is_root() {
            allow.push(Verb::Move);
        }
        allow.extend([Verb::Lock, Verb::Unlock]);
        allow
    }

    /// The steps of SPEC §4 after credentials, for a resource path, one named call each.
    /// The one fast path (a PUT that needs no lookup) skips no step: it is taken only when
    /// the rules are decided and nothing the lookup would tell can change an answer.
    async fn resource(
        &self,
        verb: Verb,
        path: ResourcePath,
        principal: Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let ruled = self.rules(verb, path, &principal).await?;
        if verb.is_dav() {
            return Box::pin(self.dav(verb, ruled, principal, request)).await;
        }
        // The writes and listings are boxed (as `/.larder` is, in `respond`): every request's
        // future is as large as its largest branch and is moved whole (memcpy) on its way to
        // hyper, so unboxed they made each GET build and copy 10 KiB instead of under 4.
        if verb == Verb::Put && self.put_needs_no_lookup(ruled.decided, &ruled.path, &request) {
            self.authorize_parents(&principal, &ruled.path).await?;
            return Box::pin(self.put(ruled.path, None, principal, request)).await;
        }
        let opened = self.store.open(&ruled.path).await?;
        self.rules_for_what_is_there(verb, &ruled, opened.as_ref().map(|(e, _)| e), &principal)?;
        let path = ruled.path;
        let Some((entry, handle)) = opened else {
            return match verb {
                Verb::Put => {
                    self.authorize_parents(&principal, &path).await?;
                    let touched = dav::touched(&path, true, false);
                    self.locks_admit(request.headers(), &principal, &path, None, &touched).await?;
                    Box::pin(self.put(path, None, principal, request)).await
                }
                _ => Err(Problem::not_found()),
            };
        };
        if let Some(answer) = form_mismatch(verb, &path, &entry)? {
            return Ok(answer);
        }
        let allow = self.method_allowed(verb, &entry)?;
        let charge = match verb {
            Verb::Get | Verb::Head if !entry.is_collection() => {
                self.payment(verb, &principal, &entry, request.headers()).await?
            }
            _ => None,
        };
        let touched = match verb {
            Verb::Put | Verb::Post => dav::touched(&path, false, false),
            Verb::Delete => dav::touched(&path, true, entry.is_collection()),
            _ => Vec::new(),
        };
        self.locks_admit(request.headers(), &principal, &path, Some(&entry), &touched).await?;
        // The action: body limits (413) and preconditions (412/304) come first in each.
        match verb {
            Verb::Options => Ok(options(allow_value(&allow))),
            Verb::Trace => Ok(trace(&request)),
            Verb::Get | Verb::Head if entry.is_collection() => {
                Box::pin(self.listing(verb, &entry, &principal, &request)).await
            }
            Verb::Get | Verb::Head => self.get(verb, &entry, handle, &request, charge).await,
            Verb::Put => Box::pin(self.put(path, Some(entry), principal, request)).await,
            Verb::Post => Box::pin(self.post(&entry, principal, request)).await,
            Verb::Delete => {
                let deleted = Box::pin(self.delete(&entry, &request)).await?;
                self.forget_locks(&entry.path.as_key()).await?;
                Ok(deleted)
            }
            _ => Err(method_not_allowed(verb, &allow)),
        }
    }

    /// Rules (403/404), before the store is opened: for `path`, and where symlinks are
    /// followed, for the path they lead to, which is then the one acted on (the store
    /// follows none itself).
    async fn rules(
        &self,
        verb: Verb,
        path: ResourcePath,
        principal: &Principal,
    ) -> Result<Ruled, Problem> {
        let decided = self.authorize_before_store(verb, &path, principal)?;
        if !self.settings().follow_symlinks {
            return Ok(Ruled { path, requested: None, decided });
        }
        match self.store.canonical(&path).await? {
            Some(real) => {
                let also = self.authorize_before_store(verb, &real, principal)?;
                Ok(Ruled { path: real, requested: Some(path), decided: decided && also })
            }
            None => Ok(Ruled { path, requested: None, decided }),
        }
    }

    /// The rules that depend on what is at the path, when [`App::rules`] could not decide
    /// them: a collection's listing is `list`, a resource's reading `read`; a PUT creates or
    /// updates.
    fn rules_for_what_is_there(
        &self,
        verb: Verb,
        ruled: &Ruled,
        entry: Option<&Entry>,
        principal: &Principal,
    ) -> Result<(), Problem> {
        if ruled.decided {
            return Ok(());
        }
        let collection = entry.map_or(ruled.path.is_collection(), Entry::is_collection);
        let action = match verb {
            Verb::Get | Verb::Head | Verb::Options | Verb::Trace if collection => Action::List,
            Verb::Get | Verb::Head | Verb::Options | Verb::Trace => Action::Read,
            Verb::Put if entry.is_some() => Action::Update,
            Verb::Put | Verb::Post => Action::Create,
            Verb::Delete => Action::Delete,
            Verb::Move if collection => Action::List,
            Verb::Move => Action::Read,
            dav => dav::action_of(dav, collection, entry.is_some()),
        };
        self.authorize(principal, &ruled.path, action)?;
        match &ruled.requested {
            Some(requested) => self.authorize(principal, requested, action),
            None => Ok(()),
        }
    }

    /// Method allowed here (405); the methods that are, for `Allow`.
    fn method_allowed(&self, verb: Verb, entry: &Entry) -> Result<Vec<Verb>, Problem> {
        let allow = self.allowed(entry);
        match allow.contains(&verb) {
            true => Ok(allow),
            false => Err(method_not_allowed(verb, &allow)),
        }
    }
}

/// What [`App::rules`] decided.
struct Ruled {
    /// The path to act on.
    path: ResourcePath,
    /// The path asked for, when a symlink led elsewhere.
    requested: Option<ResourcePath>,
    /// True when the rules allowed the request whatever is at the path.
    decided: bool,
}

/// The path's form must match what is there: `/docs` for a folder redirects (or conflicts,
/// for writes); `/a.txt/` for a file does not exist.
fn form_mismatch(
    verb: Verb,
    path: &ResourcePath,
    entry: &Entry,
) -> Result<Option<Response<Body>>, Problem> {
    let reads = matches!(verb, Verb::Get | Verb::Head | Verb::Options | Verb::Trace);
    match (entry.is_collection(), path.is_collection()) {
        (true, false) if reads => Ok(Some(redirect(&entry.path))),
        (true, false) => Err(Problem::new(
            Slug::Conflict,
            format!("This is a collection; its path is {}.", entry.path.to_url()),
        )),
        (false, true) if matches!(verb, Verb::Put | Verb::Post) => Err(Problem::new(
            Slug::Conflict,
            format!("This is a resource, not a collection: {}.", entry.path.to_url()),
        )),
        (false, true) => Err(Problem::not_found()),
        _ => Ok(None),
    }
}

/// Method known (501).
fn known_method(method: &Method) -> Result<Verb, Problem> {
    Verb::parse(method)
        .ok_or_else(|| Problem::new(Slug::NotImplemented, format!("{method} is not implemented.")))
}

/// A 401 with one challenge per scheme; 429 with Retry-After for throttled sign-ins.
pub fn unauthenticated(realm: &str, failure: Option<Failure>) -> Problem {
    if let Some(Failure::Throttled(wait)) = failure {
        return Problem::new(
            Slug::TooManyRequests,
            "Too many failed sign-ins from this address or for this account.",
        )
        .header(RETRY_AFTER, HeaderValue::from(wait.as_secs()))
        .header(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let basic = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
    let bearer = match failure {
        Some(Failure::InvalidToken) => format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
        _ => format!("Bearer realm=\"{realm}\""),
    };
    let detail = match failure {
        Some(Failure::BadCredentials) => "The credentials are wrong or malformed.",
        Some(Failure::InvalidToken) => "The bearer token is unknown, expired or revoked.",
        _ => "This resource needs credentials.",
    };
    let mut problem = Problem::new(Slug::Unauthenticated, detail);
    for challenge in [basic, bearer] {
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            problem = problem.header(WWW_AUTHENTICATE, value);
        }
    }
    problem
}

/// A 403 for a known account.
pub fn forbidden(detail: &str) -> Problem {
    Problem::new(Slug::Forbidden, detail)
}

/// A 403 for a token that does not reach this far (RFC 6750 `insufficient_scope`).
pub fn out_of_scope(realm: &str) -> Problem {
    let challenge = format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\"");
    let problem = forbidden("The token used does not allow this here (scope or read-only).");
    match HeaderValue::from_str(&challenge) {
        Ok(value) => problem.header(WWW_AUTHENTICATE, value),
        Err(_) => problem,
    }
}

/// Reads a JSON request body of at most 64 KiB. An empty body without a Content-Type gives
/// the default; another media type is 415; malformed JSON or unknown fields are 400 naming
/// the field.
pub async fn read_json<T: serde::de::DeserializeOwned + Default>(
    request: Request<Inbound>,
    metrics: &Metrics,
) -> Result<T, Problem> {
    const LIMIT: usize = 64 * 1024;
    let media = content_type(request.headers());
    if media.is_none() && body_is_empty(&request) {
        return Ok(T::default());
    }
    let essence =
        media.as_deref().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(Problem::new(Slug::UnsupportedMediaType, "Send the body as application/json."));
    }
    let body = http_body_util::Limited::new(request.into_body(), LIMIT);
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
            Some(_) => Problem::new(
                Slug::ContentTooLarge,
                format!("A JSON body has at most {LIMIT} bytes."),
            ),
            None => Problem::new(Slug::BadRequest, "The request body was cut off."),
        })?
        .to_bytes();
    metrics.received(bytes.len() as u64);
    if bytes.is_empty() {
        return Ok(T::default());
    }
    // The error names the field it is about (`amount: invalid type…`), as SPEC §7 asks.
    let mut reader = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let detail = match e.path().to_string().as_str() {
            "." => format!("The JSON body is not accepted: {}.", e.inner()),
            field => format!("{field}: {}.", e.inner()),
        };
        Problem::new(Slug::BadRequest, detail)
    })
}

/// Adds `Cookie` to the answer's `Vary`, unless it is there.
fn vary_cookie(headers: &mut HeaderMap) {
    use http::header::VARY;
    let named = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.split(',').any(|f| f.trim().eq_ignore_ascii_case("cookie")))
    });
    if !named {
        headers.append(VARY, HeaderValue::from_static("Cookie"));
    }
}

fn validators(entry: &Entry) -> Validators<'_> {
    Validators { etag: entry.etag.as_deref(), modified: Some(entry.modified) }
}

fn precondition_failed() -> Problem {
    Problem::new(
        Slug::PreconditionFailed,
        "A precondition of the request is false; nothing was changed.",
    )
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|ct| !ct.is_empty())
}

fn body_is_empty(request: &Request<Inbound>) -> bool {
    use http_body::Body as _;
    request.body().size_hint().exact() == Some(0)
}

/// `Last-Modified` for `entry`, never later than Date (RFC 9110 §8.8.2.1). An HTTP date
/// counts whole seconds, and each thread keeps the last one it formatted: a hot resource's
/// date is formatted once.
fn last_modified(entry: &Entry) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let time = entry.modified.min(SystemTime::now());
    let format = |time| {
        HeaderValue::from_str(&httpdate::fmt_http_date(time))
            .unwrap_or(HeaderValue::from_static(""))
    };
    let Ok(since) = time.duration_since(std::time::UNIX_EPOCH) else {
        return format(time);
    };
    let second = since.as_secs();
    LAST.with_borrow_mut(|last| match last {
        Some((at, value)) if *at == second => value.clone(),
        _ => {
            let value = format(time);
            *last = Some((second, value.clone()));
            value
        }
    })
}

fn etag_value(entry: &Entry) -> Option<HeaderValue> {
    let opaque = entry.etag.as_deref()?;
    let mut quoted = Vec::with_capacity(opaque.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(opaque.as_bytes());
    quoted.push(b'"');
    HeaderValue::from_maybe_shared(bytes::Bytes::from(quoted)).ok()
}

/// The header fields of a response that carries `entry`'s representation, in a map with room
/// for the fields every such response adds (so that it never grows).
fn representation_headers(entry: &Entry) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(14);
    if let Some(ct) = media::served(entry.content_type.as_deref()) {
        headers.insert(CONTENT_TYPE, ct);
    }
    if let Some(etag) = etag_value(entry) {
        headers.insert(ETAG, etag);
    }
    headers.insert(LAST_MODIFIED, last_modified(entry));
    headers
}

fn not_modified(entry: &Entry) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    if let Some(etag) = etag_value(entry) {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}

fn stored(put: Put) -> Response<Body> {
    let status = if put.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = json_response(status, &listing::describe(&put.entry));
    let headers = response.headers_mut();
    if put.created {
        insert_location(headers, &put.entry.path);
    }
    if let Some(etag) = etag_value(&put.entry) {
        headers.insert(ETAG, etag);
    }
    response
}

fn insert_location(headers: &mut HeaderMap, path: &ResourcePath) {
    if let Ok(value) = HeaderValue::from_str(&path.to_url()) {
        headers.insert(LOCATION, value);
    }
}

/// A JSON answer.
pub fn json_response(status: StatusCode, document: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(document).unwrap_or_default();
    let len = bytes.len();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// OPTIONS' answer: 204 with `Allow`, and WebDAV's classes.
fn options(allow: HeaderValue) -> Response<Body> {
    let mut response = no_content_with(ALLOW, allow);
    let headers = response.headers_mut();
    headers.insert("dav", HeaderValue::from_static("1, 2"));
    headers.insert("ms-author-via", HeaderValue::from_static("DAV"));
    response
}

/// A 204 with one header field.
pub fn no_content_with(name: HeaderName, value: HeaderValue) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(name, value);
    response
}

fn redirect(to: &ResourcePath) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    insert_location(response.headers_mut(), to);
    response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(0));
    response
}

fn options_star(trace: bool) -> Response<Body> {
    let mut methods =
        vec![Verb::Get, Verb::Head, Verb::Put, Verb::Post, Verb::Delete, Verb::Options];
    if trace {
        methods.push(Verb::Trace);
    }
    methods.extend([
        Verb::Propfind,
        Verb::Proppatch,
        Verb::Mkcol,
        Verb::Copy,
        Verb::Move,
        Verb::Lock,
        Verb::Unlock,
    ]);
    let document = json!({
        "server": "larder",
        "version": env!("CARGO_PKG_VERSION"),
        "methods": methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "authentication": ["Basic", "Bearer"],
        "ranges": ["bytes"],
    });
    let mut response = json_response(StatusCode::OK, &document);
    let headers = response.headers_mut();
    headers.insert(ALLOW, allow_value(&methods));
    headers.insert("dav", HeaderValue::from_static("1, 2"));
    headers.insert("ms-author-via", HeaderValue::from_static("DAV"));
    response
}

/// The request as received, minus credentials, as `message/http`.
fn trace(request: &Request<Inbound>) -> Response<Body> {
    let version = match request.version() {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    };
    let mut echo = format!("{} {} {version}\r\n", request.method(), request.uri()).into_bytes();
    for (name, value) in request.headers() {
        if SECRET_FIELDS.contains(&name.as_str()) {
            continue;
        }
        echo.extend_from_slice(name.as_str().as_bytes());
        echo.extend_from_slice(b": ");
        echo.extend_from_slice(value.as_bytes());
        echo.extend_from_slice(b"\r\n");
    }
    echo.extend_from_slice(b"\r\n");
    let len = echo.len();
    let mut response = Response::new(full(echo));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("message/http"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn parse_target(verb: Verb, uri: &http::Uri) -> Result<Target, Problem> {
    if uri.path() == "*" {
        return match verb {
            Verb::Options => Ok(Target::Star),
            _ => Err(Problem::new(Slug::BadRequest, "Only OPTIONS may target *.")),
        };
    }
    let path = ResourcePath::parse(uri.path())?;
    match path.segments().first() {
        Some(first) if first == ".larder" => Ok(Target::Larder(path.segments()[1..].to_vec())),
        _ => Ok(Target::Resource(path)),
    }
}
