//! WebDAV, RFC 4918 classes 1 and 2 (SPEC §8), on the same resources, rules and guarantees:
//! PROPFIND, PROPPATCH, MKCOL, LOCK and UNLOCK here, COPY and MOVE in `transfer.rs`. Every
//! path a method touches is decided by [`App::authorize`] before the store acts; a hidden
//! path answers as a missing one because the rules refuse it before any lookup.

mod locks;
mod transfer;
pub mod xml;

use std::time::SystemTime;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

use super::inbound::Inbound;
use super::problem::{Problem, Slug};
use super::{App, Body, Ruled, Verb, full, precondition_failed};
use crate::access::{Action, Principal};
use crate::path::ResourcePath;
use crate::state::State;
use crate::state::davlock::{Lock, Refused};
use crate::state::property::{MAX_VALUE, PropertyChange};
use crate::store::{Entry, Store, Upload};
use locks::Test;
use xml::{DAV, Name, PropFind, Update, Writer};

/// A DAV request body is read whole up to this size.
const BODY_LIMIT: usize = 1024 * 1024;

/// The live properties, in the order `allprop` and `propname` give them (RFC 4331's quota
/// properties only when asked for by name, as that RFC says).
const LIVE: [&str; 9] = [
    "resourcetype",
    "getcontentlength",
    "getcontenttype",
    "getetag",
    "getlastmodified",
    "creationdate",
    "displayname",
    "supportedlock",
    "lockdiscovery",
];
const QUOTA: [&str; 2] = ["quota-available-bytes", "quota-used-bytes"];

/// A `Depth` field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Depth {
    Zero,
    One,
    Infinity,
}

/// The `Depth` field, or `default` without one; another value is 400.
pub(super) fn depth(headers: &HeaderMap, default: Depth) -> Result<Depth, Problem> {
    match headers.get("depth").map(|v| v.as_bytes()) {
        None => Ok(default),
        Some(b"0") => Ok(Depth::Zero),
        Some(b"1") => Ok(Depth::One),
        Some(v) if v.eq_ignore_ascii_case(b"infinity") => Ok(Depth::Infinity),
        Some(_) => Err(bad_request("Depth is 0, 1 or infinity.")),
    }
}

fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(Slug::BadRequest, detail)
}

/// The paths a write touches, for the locks that guard them: `(key, beneath)`, where
/// `beneath` also takes the locks inside a collection that goes whole.
pub(super) type Touched = Vec<(String, bool)>;

/// The keys a write at `path` touches: the path, and its parent's membership when the write
/// adds or removes it (a lock on a collection guards its list of members, RFC 4918 §7.4).
pub(super) fn touched(path: &ResourcePath, membership: bool, whole: bool) -> Touched {
    let mut keys = vec![(path.as_key(), whole)];
    if membership && !path.is_root() {
        keys.push((path.parent().as_key(), false));
    }
    keys
}

impl<S: Store> App<S> {
    /// A WebDAV method, after the rules that could be decided before the store.
    pub(super) async fn dav(
        &self,
        verb: Verb,
        ruled: Ruled,
        principal: Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let opened = self.store.open(&ruled.path).await?;
        let entry = opened.map(|(entry, _)| entry);
        self.rules_for_what_is_there(verb, &ruled, entry.as_ref(), &principal)?;
        let path = ruled.path;
        match (verb, entry) {
            (Verb::Mkcol, entry) => self.mkcol(path, entry, &principal, request).await,
            (Verb::Lock, entry) => self.lock(path, entry, &principal, request).await,
            (_, None) => Err(Problem::not_found()),
            (Verb::Propfind, Some(entry)) => self.propfind(entry, &principal, request).await,
            (Verb::Proppatch, Some(entry)) => self.proppatch(entry, &principal, request).await,
            (Verb::Unlock, Some(entry)) => self.unlock(&entry, &principal, &request).await,
            (Verb::Copy | Verb::Move, Some(entry)) => {
                Box::pin(self.transfer(verb, entry, principal, request)).await
            }
            (other, Some(_)) => Err(super::method_not_allowed(other, &[])),
        }
    }

    /// A call on the lock table: on the blocking pool with PostgreSQL, at once with SQLite's
    /// table in memory.
    pub(super) async fn locks<T: Send + 'static>(
        &self,
        work: impl FnOnce(&State) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Problem> {
        match self.state.postgres() {
            Some(_) => self.state_call(work).await,
            None => work(&self.state).map_err(|_| Problem::internal()),
        }
    }

    /// Whether a write may skip the lock table: only where it is in memory and empty.
    pub(super) fn no_locks(&self) -> bool {
        self.state.sqlite().is_some_and(|db| db.dav_locks_any().is_ok_and(|any| !any))
    }

    /// The locks covering `key` (with `beneath`, also those inside the collection `key`).
    async fn locks_on(&self, key: &str, beneath: bool) -> Result<Vec<Lock>, Problem> {
        let key = key.to_owned();
        self.locks(move |s| s.dav_locks(&key, beneath)).await
    }

    /// Forgets the locks at or beneath `key`, which was deleted or moved away.
    pub(super) async fn forget_locks(&self, key: &str) -> Result<(), Problem> {
        let key = key.to_owned();
        self.locks(move |s| s.dav_lock_forget(&key)).await
    }

    /// The `If` header (412 when no list holds) and the locks over `touched` (423 unless
    /// their tokens were sent, by the principal that holds them). `entry` is the target's
    /// current version, for entity tags in the `If` header.
    pub(super) async fn locks_admit(
        &self,
        headers: &HeaderMap,
        principal: &Principal,
        target: &ResourcePath,
        entry: Option<&Entry>,
        touched: &[(String, bool)],
    ) -> Result<(), Problem> {
        let mut tokens = Vec::new();
        if let Some(field) = headers.get("if") {
            let field = field.to_str().map_err(|_| bad_request("The If header is not text."))?;
            let lists = locks::parse_if(field).map_err(bad_request)?;
            let mut holds = false;
            for list in &lists {
                let key = match &list.tag {
                    Some(tag) => match tag_path(tag) {
                        Some(path) => path.as_key(),
                        None => continue,
                    },
                    None => target.as_key(),
                };
                let same = key.trim_end_matches('/') == target.as_key().trim_end_matches('/');
                let there = self.locks_on(&key, false).await?;
                let met = list.conditions.iter().all(|c| {
                    let met = match &c.test {
                        Test::Token(token) => there.iter().any(|l| &l.token == token),
                        Test::Etag(tag) => {
                            same && entry.and_then(|e| e.etag.as_deref()).is_some_and(|etag| {
                                tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
                                    == Some(etag)
                            })
                        }
                    };
                    met != c.not
                });
                if met {
                    holds = true;
                    break;
                }
            }
            if !holds {
                return Err(precondition_failed());
            }
            tokens = locks::submitted(&lists).into_iter().map(str::to_owned).collect();
        }
        if touched.is_empty() || self.no_locks() {
            return Ok(());
        }
        let holder = principal.account.as_deref();
        for (key, beneath) in touched {
            for lock in self.locks_on(key, *beneath).await? {
                if !(tokens.contains(&lock.token) && lock.holder.as_deref() == holder) {
                    return Err(locked(&lock.root));
                }
            }
        }
        Ok(())
    }

    /// PROPFIND: Depth 0 or 1; only the members the caller may list appear.
    async fn propfind(
        &self,
        entry: Entry,
        principal: &Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let depth = depth(request.headers(), Depth::Infinity)?;
        if depth == Depth::Infinity {
            return Err(Problem::new(
                Slug::PropfindFiniteDepth,
                "PROPFIND with Depth: infinity is not answered; ask with Depth: 0 or 1.",
            ));
        }
        let body = read_body(request).await?;
        let asked = xml::propfind(&body).map_err(bad_request)?;
        let mut members = vec![entry.clone()];
        if depth == Depth::One && entry.is_collection() {
            let rules = &self.settings().rules;
            let all = self.store.list(&entry.path).await?;
            members.extend(
                all.iter()
                    .filter(|m| rules.listed(principal, m.path.segments(), m.is_collection()))
                    .cloned(),
            );
        }
        let key = entry.path.as_key();
        let deep = depth == Depth::One && entry.is_collection();
        let dead = self.state_call(move |s| s.properties_within(&key, deep)).await?;
        let quota = match (&asked, principal.account_owned()) {
            (PropFind::Some(names), Some(account))
                if names.iter().any(|n| n.ns == DAV && QUOTA.contains(&n.local.as_str())) =>
            {
                let storage = self.settings().meter.plan_of(&account).map(|(_, t)| t.storage);
                match storage {
                    Some(storage) => {
                        let used = self.state_call(move |s| s.usage(&account)).await?;
                        Some((storage.saturating_sub(used), used))
                    }
                    None => None,
                }
            }
            _ => None,
        };
        // One look at the lock table for the whole answer.
        let held = match self.no_locks() {
            true => Vec::new(),
            false => self.locks_on(&entry.path.as_key(), deep).await?,
        };
        let mut out = Writer::new("multistatus");
        for member in &members {
            let key = member.path.as_key();
            let props: Vec<&(String, String)> =
                dead.iter().filter(|(p, _)| p == &key).map(|(_, kv)| kv).collect();
            let locks: Vec<Lock> = held.iter().filter(|l| l.covers(&key)).cloned().collect();
            describe(&mut out, member, &asked, &props, &locks, quota);
        }
        Ok(multistatus(out.finish("multistatus")))
    }

    /// PROPPATCH: dead properties set and removed in order, all or none; live ones are
    /// protected (403 inside the 207, the others 424).
    async fn proppatch(
        &self,
        entry: Entry,
        principal: &Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let touched = touched(&entry.path, false, false);
        self.locks_admit(request.headers(), principal, &entry.path, Some(&entry), &touched).await?;
        if principal.read_only() {
            return Err(super::out_of_scope(&self.settings().realm));
        }
        let body = read_body(request).await?;
        let updates = xml::propertyupdate(&body).map_err(bad_request)?;
        let name_of = |u: &Update| match u {
            Update::Set(n, _) | Update::Remove(n) => n.clone(),
        };
        let protected = |n: &Name| {
            n.ns == DAV && (LIVE.contains(&n.local.as_str()) || QUOTA.contains(&n.local.as_str()))
        };
        let too_long =
            updates.iter().any(|u| matches!(u, Update::Set(_, v) if v.len() > MAX_VALUE));
        let refused = updates.iter().any(|u| protected(&name_of(u))) || too_long;
        let mut status = "HTTP/1.1 200 OK";
        if refused {
            status = "HTTP/1.1 424 Failed Dependency";
        } else {
            let changes: Vec<PropertyChange> = updates
                .iter()
                .map(|u| match u {
                    Update::Set(n, v) => PropertyChange { name: n.clark(), value: Some(v.clone()) },
                    Update::Remove(n) => PropertyChange { name: n.clark(), value: None },
                })
                .collect();
            let key = entry.path.as_key();
            if self.state_call(move |s| s.patch_properties(&key, &changes)).await?.is_err() {
                status = "HTTP/1.1 507 Insufficient Storage";
            }
        }
        let mut out = Writer::new("multistatus");
        out.open("response").text("href", &entry.path.to_url());
        for update in &updates {
            let name = name_of(update);
            let own = match (protected(&name), update) {
                (true, _) => "HTTP/1.1 403 Forbidden",
                (false, Update::Set(_, v)) if v.len() > MAX_VALUE => {
                    "HTTP/1.1 507 Insufficient Storage"
                }
                _ => status,
            };
            out.open("propstat").open("prop").property(&name, None).close("prop");
            out.text("status", own).close("propstat");
        }
        out.close("response");
        Ok(multistatus(out.finish("multistatus")))
    }

    /// MKCOL: 201; an existing name 405, a missing parent 409, a body 415.
    async fn mkcol(
        &self,
        path: ResourcePath,
        entry: Option<Entry>,
        principal: &Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        if let Some(entry) = entry {
            let allow = self.allowed(&entry);
            return Err(super::method_not_allowed(Verb::Mkcol, &allow));
        }
        let path = path.with_collection(true);
        self.locks_admit(request.headers(), principal, &path, None, &touched(&path, true, false))
            .await?;
        if !super::body_is_empty(&request) {
            return Err(Problem::new(
                Slug::UnsupportedMediaType,
                "MKCOL takes no body here: send it empty.",
            ));
        }
        if principal.read_only() {
            return Err(super::out_of_scope(&self.settings().realm));
        }
        if !path.parent().is_root() && self.store.open(&path.parent()).await?.is_none() {
            return Err(Problem::new(Slug::Conflict, "The parent collection does not exist."));
        }
        let upload = self.upload_for(principal, None);
        let made = self.store.create_collection(&path, upload, |_| Ok::<(), ()>(())).await;
        match made {
            Ok(Ok(put)) if put.created => Ok(super::stored(put)),
            Ok(_) => Err(super::method_not_allowed(Verb::Mkcol, &[])),
            Err(e) => Err(self.write_problem(e, principal.account.as_deref()).await),
        }
    }

    /// What a write by `principal` records: its account as owner, the quotas in force.
    pub(super) fn upload_for(&self, principal: &Principal, content_type: Option<String>) -> Upload {
        Upload {
            content_type,
            owner: principal.account_owned(),
            quotas: self.settings().meter.quotas(),
            text: None,
        }
    }

    /// LOCK: a new lock (on an unmapped path, an empty resource is made: 201), or a refresh
    /// of one whose token the `If` header names.
    async fn lock(
        &self,
        path: ResourcePath,
        entry: Option<Entry>,
        principal: &Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        if principal.read_only() {
            return Err(super::out_of_scope(&self.settings().realm));
        }
        let headers = request.headers().clone();
        let timeout = locks::timeout(headers.get("timeout").and_then(|v| v.to_str().ok()));
        let body = read_body(request).await?;
        let info = xml::lockinfo(&body).map_err(bad_request)?;
        let key = entry.as_ref().map_or(path.as_key(), |e| e.path.as_key());
        let holder = principal.account_owned();
        let Some(info) = info else {
            // A refresh: the token in the If header, held by this principal.
            let field = headers.get("if").and_then(|v| v.to_str().ok()).unwrap_or("");
            let lists = locks::parse_if(field).map_err(|_| {
                bad_request("A LOCK without a body refreshes: send the lock's token in If.")
            })?;
            let mut refreshed = None;
            for token in locks::submitted(&lists) {
                let (token, key, holder) = (token.to_owned(), key.clone(), holder.clone());
                let found = self
                    .locks(move |s| s.dav_lock_refresh(&token, &key, holder.as_deref(), timeout))
                    .await?;
                if found.is_some() {
                    refreshed = found;
                    break;
                }
            }
            let Some(lock) = refreshed else { return Err(precondition_failed()) };
            return Ok(lock_answer(StatusCode::OK, &lock, &key));
        };
        let collection = entry.as_ref().is_some_and(Entry::is_collection);
        let infinite = depth(&headers, Depth::Infinity)? == Depth::Infinity && collection;
        let target = entry.as_ref().map_or(path.clone(), |e| e.path.clone());
        // Locks on the target itself conflict or not in `take`; an unmapped path made here
        // joins its parent's members, which a lock there guards.
        let guarded = match &entry {
            Some(_) => Vec::new(),
            None => touched(&target, true, false).split_off(1),
        };
        self.locks_admit(&headers, principal, &target, entry.as_ref(), &guarded).await?;
        let lock = Lock {
            token: locks::new_token(),
            root: key.clone(),
            infinite,
            exclusive: info.exclusive,
            owner: info.owner,
            holder,
            timeout,
            expires: SystemTime::now() + timeout,
        };
        let taken = lock.clone();
        match self.locks(move |s| s.dav_lock_take(&taken)).await? {
            Ok(()) => {}
            Err(Refused::Conflict(root)) => return Err(locked(&root)),
            Err(Refused::Full) => {
                return Err(Problem::new(
                    Slug::Unavailable,
                    "Too many locks are held; try again later.",
                ));
            }
        };
        if entry.is_some() {
            return Ok(lock_answer(StatusCode::OK, &lock, &key));
        }
        // An unmapped path: an empty resource is made, under the lock just taken.
        let body: crate::store::ByteStream = Box::pin(futures_util::stream::empty());
        let upload = self.upload_for(principal, None);
        let made = self.store.put(&path, upload, body, |current| match current {
            None => Ok(()),
            Some(_) => Err(()),
        });
        match made.await {
            Ok(_) => Ok(lock_answer(StatusCode::CREATED, &lock, &key)),
            Err(e) => {
                let (token, holder) = (lock.token.clone(), lock.holder.clone());
                self.locks(move |s| s.dav_lock_release(&token, &key, holder.as_deref())).await?;
                Err(self.write_problem(e, principal.account.as_deref()).await)
            }
        }
    }

    /// UNLOCK: the token in `Lock-Token`, held by this principal: 204; else 409.
    async fn unlock(
        &self,
        entry: &Entry,
        principal: &Principal,
        request: &Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let token = request
            .headers()
            .get("lock-token")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix('<')?.strip_suffix('>').map(str::to_owned))
            .ok_or_else(|| bad_request("UNLOCK needs Lock-Token: <token>."))?;
        let (key, holder) = (entry.path.as_key(), principal.account.clone());
        let released =
            self.locks(move |s| s.dav_lock_release(&token, &key, holder.as_deref())).await?;
        match released {
            true => Ok(super::no_content_with(CONTENT_LENGTH, HeaderValue::from(0))),
            false => Err(Problem::new(
                Slug::Conflict,
                "No lock with this token, held by this account, covers this path.",
            )),
        }
    }
}

/// A 423 naming the lock's root.
fn locked(root: &str) -> Problem {
    Problem::new(Slug::Locked, format!("A lock on {root} covers this path."))
}

/// The path a Resource-Tag (an absolute or absolute-path URL) names.
fn tag_path(tag: &str) -> Option<ResourcePath> {
    let uri: http::Uri = tag.parse().ok()?;
    ResourcePath::parse(uri.path()).ok()
}

/// Reads a DAV request body of at most [`BODY_LIMIT`] bytes.
async fn read_body(request: Request<Inbound>) -> Result<bytes::Bytes, Problem> {
    let body = http_body_util::Limited::new(request.into_body(), BODY_LIMIT);
    match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(Problem::new(
                Slug::ContentTooLarge,
                format!("A WebDAV body has at most {BODY_LIMIT} bytes."),
            ))
        }
        Err(_) => Err(bad_request("The request body was cut off.")),
    }
}

/// A 207 with `document`.
fn multistatus(document: Vec<u8>) -> Response<Body> {
    xml_response(StatusCode::MULTI_STATUS, document)
}

fn xml_response(status: StatusCode, document: Vec<u8>) -> Response<Body> {
    let len = document.len();
    let mut response = Response::new(full(document));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// LOCK's answer: the lock's description and its token in `Lock-Token`.
fn lock_answer(status: StatusCode, lock: &Lock, key: &str) -> Response<Body> {
    let mut out = Writer::new("prop");
    out.open("lockdiscovery");
    active_lock(&mut out, lock, key);
    out.close("lockdiscovery");
    let mut response = xml_response(status, out.finish("prop"));
    if let Ok(value) = HeaderValue::from_str(&format!("<{}>", lock.token)) {
        response.headers_mut().insert("lock-token", value);
    }
    response
}

fn active_lock(out: &mut Writer, lock: &Lock, _key: &str) {
    out.open("activelock");
    out.open("locktype").empty("write").close("locktype");
    out.open("lockscope")
        .empty(if lock.exclusive { "exclusive" } else { "shared" })
        .close("lockscope");
    out.text("depth", if lock.infinite { "infinity" } else { "0" });
    if let Some(owner) = &lock.owner {
        out.open("owner").raw(owner).close("owner");
    }
    out.text("timeout", &format!("Second-{}", lock.timeout.as_secs()));
    out.open("locktoken").text("href", &lock.token).close("locktoken");
    let root =
        ResourcePath::parse(&lock.root).map(|p| p.to_url()).unwrap_or_else(|_| lock.root.clone());
    out.open("lockroot").text("href", &root).close("lockroot");
    out.close("activelock");
}

/// One `response` of a PROPFIND: the properties asked for, found (200) and not (404).
fn describe(
    out: &mut Writer,
    entry: &Entry,
    asked: &PropFind,
    dead: &[&(String, String)],
    locks: &[Lock],
    quota: Option<(u64, u64)>,
) {
    out.open("response").text("href", &entry.path.to_url());
    let dav = |local: &str| Name::dav(local);
    let mut names: Vec<Name> = match asked {
        PropFind::Some(names) => names.clone(),
        PropFind::All(include) => {
            let mut all: Vec<Name> = LIVE.iter().map(|l| dav(l)).collect();
            all.extend(dead.iter().filter_map(|(n, _)| Name::from_clark(n)));
            all.extend(include.iter().cloned());
            all
        }
        PropFind::Names => {
            let mut all: Vec<Name> = LIVE.iter().map(|l| dav(l)).collect();
            all.extend(dead.iter().filter_map(|(n, _)| Name::from_clark(n)));
            all
        }
    };
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let mut found = Writer::fragment();
    let mut missing = Writer::fragment();
    let names_only = matches!(asked, PropFind::Names);
    for name in &names {
        let value = match name.ns.as_str() {
            DAV => live(entry, &name.local, locks, quota),
            _ => None,
        }
        .or_else(|| {
            let clark = name.clark();
            dead.iter().find(|(n, _)| *n == clark).map(|(_, v)| Value::Xml(v.clone()))
        });
        match (value, names_only) {
            (Some(_), true) => {
                found.property(name, None);
            }
            (Some(Value::Text(text)), false) => {
                found.property(name, Some(&quick_xml::escape::partial_escape(text.as_str())));
            }
            (Some(Value::Xml(xml)), false) => {
                found.property(name, Some(&xml));
            }
            // Asked by name and not there: 404. Under allprop or propname, what does not
            // apply (a collection's length) is simply not listed.
            (None, _) if matches!(asked, PropFind::Some(_)) => {
                missing.property(name, None);
            }
            (None, _) => {}
        }
    }
    for (part, status) in [(found, "HTTP/1.1 200 OK"), (missing, "HTTP/1.1 404 Not Found")] {
        if part.is_empty() {
            continue;
        }
        out.open("propstat").open("prop").raw(&part.into_string()).close("prop");
        out.text("status", status).close("propstat");
    }
    out.close("response");
}

/// A live property's value: text to escape, or XML that larder wrote.
enum Value {
    Text(String),
    Xml(String),
}

fn live(entry: &Entry, local: &str, locks: &[Lock], quota: Option<(u64, u64)>) -> Option<Value> {
    let resource = !entry.is_collection();
    Some(match local {
        "resourcetype" if resource => Value::Text(String::new()),
        "resourcetype" => Value::Xml("<D:collection/>".into()),
        "getcontentlength" if resource => Value::Text(entry.size.to_string()),
        "getcontenttype" if resource => Value::Text(entry.content_type.clone()?),
        "getetag" if resource => Value::Text(format!("\"{}\"", entry.etag.as_deref()?)),
        "getlastmodified" => Value::Text(httpdate::fmt_http_date(entry.modified)),
        "creationdate" => Value::Text(humantime::format_rfc3339_seconds(entry.modified).to_string()),
        "displayname" => Value::Text(entry.path.name().to_owned()),
        "supportedlock" => Value::Xml(
            ["exclusive", "shared"]
                .map(|scope| {
                    format!(
                        "<D:lockentry><D:lockscope><D:{scope}/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>"
                    )
                })
                .concat(),
        ),
        "lockdiscovery" => {
            let mut out = Writer::fragment();
            for lock in locks {
                active_lock(&mut out, lock, &entry.path.as_key());
            }
            Value::Xml(out.into_string())
        }
        "quota-available-bytes" => Value::Text(quota?.0.to_string()),
        "quota-used-bytes" => Value::Text(quota?.1.to_string()),
        _ => return None,
    })
}

/// What a COPY or MOVE needs to know of where it goes.
pub(super) struct Destination {
    pub path: ResourcePath,
    pub overwrite: bool,
}

/// Reads `Destination` and `Overwrite`: a destination on another server is 502; one that is
/// not a valid path, 400.
pub(super) fn destination(headers: &HeaderMap) -> Result<Destination, Problem> {
    let field = headers
        .get("destination")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad_request("COPY and MOVE need a Destination."))?;
    let uri: http::Uri = field.parse().map_err(|_| bad_request("The Destination is not a URI."))?;
    if let Some(authority) = uri.authority() {
        let host = headers.get(http::header::HOST).and_then(|v| v.to_str().ok());
        if host.is_some_and(|h| !h.eq_ignore_ascii_case(authority.as_str())) {
            return Err(Problem::new(Slug::BadGateway, "The Destination names another server."));
        }
    }
    let path = ResourcePath::parse(uri.path())?;
    let overwrite = match headers.get("overwrite").map(|v| v.as_bytes()) {
        None | Some(b"T") | Some(b"t") => true,
        Some(b"F") | Some(b"f") => false,
        Some(_) => return Err(bad_request("Overwrite is T or F.")),
    };
    Ok(Destination { path, overwrite })
}

/// The `Action` a DAV verb needs at its target when nothing else decides it.
pub(super) fn action_of(verb: Verb, collection: bool, exists: bool) -> Action {
    match verb {
        Verb::Propfind | Verb::Copy | Verb::Unlock if collection => Action::List,
        Verb::Propfind | Verb::Copy | Verb::Unlock => Action::Read,
        Verb::Proppatch => Action::Update,
        Verb::Lock if exists => Action::Update,
        Verb::Mkcol | Verb::Lock => Action::Create,
        _ => Action::Delete,
    }
}
