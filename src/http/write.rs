//! Writes: PUT (resources and collections), POST (raw and multipart), DELETE. Each is first
//! admitted from its headers alone, in SPEC order: the owner's quota (402), `max_upload`
//! (413), preconditions (412). Nothing of the body is read (and no `100 Continue` is sent)
//! before that. The store then repeats the precondition and quota checks atomically with the
//! write itself.

use super::inbound::Inbound;
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use serde_json::json;

use super::conditional::{Outcome, Preconditions};
use super::media;
use super::payment::{quota_exceeded, resources_exceeded};
use super::problem::{Problem, Slug};
use super::upload::{self, BodyError};
use super::{
    App, Body, body_is_empty, content_type, empty, insert_location, json_response, listing,
    precondition_failed, stored, validators,
};
use crate::access::{Action, Principal};
use crate::path::ResourcePath;
use std::sync::Arc;

use crate::store::text::Utf8Check;
use crate::store::{self, ByteStream, Entry, Store, Upload};

/// Slack allowed past the quota while streaming a multipart body, for its framing; the exact
/// check is made per file part when it is stored.
const MULTIPART_SLACK: u64 = 64 * 1024;

/// What admission found.
struct Admitted {
    pre: Preconditions,
    /// Bytes the owner's quota leaves for this write, if the owner has a quota.
    room: Option<u64>,
    /// The owner whose quota applies.
    owner: Option<String>,
}

impl<S: Store> App<S> {
    /// A request's body as the store reads it: `max_upload` and the owner's `room` enforced
    /// while it streams, its bytes and a client's cut counted.
    fn upload_body(&self, request: Request<Inbound>, room: Option<u64>) -> ByteStream {
        upload::limited(
            request.into_body(),
            self.settings().max_upload,
            room,
            self.metrics.upload(),
        )
    }

    /// Quota (402), body size (413) and preconditions (412) from the headers alone. `owner`
    /// is who the written bytes will count against; `declared` says whether Content-Length
    /// measures them (false for multipart, whose framing adds bytes).
    async fn admit_write(
        &self,
        request: &Request<Inbound>,
        current: Option<&Entry>,
        owner: Option<String>,
        declared: bool,
    ) -> Result<Admitted, Problem> {
        let length = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut room = None;
        if let Some(owner) = &owner
            && let Some((plan, terms)) = self.settings().meter.plan_of(owner)
        {
            let who = owner.clone();
            let (used, resources) = self.state_call(move |state| state.holdings(&who)).await?;
            // A PUT of a new path, or a POST into a collection, adds a resource.
            let adds = current.is_none_or(Entry::is_collection);
            if adds && resources >= terms.files {
                return Err(resources_exceeded(resources, terms.files, plan));
            }
            let replaced = current
                .filter(|c| c.owner.as_deref() == Some(owner.as_str()) && !c.is_collection())
                .map_or(0, |c| c.size);
            let left = (terms.storage + replaced).saturating_sub(used);
            if declared
                && let Some(length) = length
                && length > left
            {
                return Err(quota_exceeded(
                    used,
                    terms.storage,
                    length - replaced.min(length),
                    plan,
                ));
            }
            room = Some(left);
        }
        if let Some(length) = length
            && length > self.settings().max_upload
        {
            return Err(Problem::new(
                Slug::ContentTooLarge,
                format!(
                    "The body is {length} bytes; at most {} are accepted.",
                    self.settings().max_upload
                ),
            ));
        }
        let pre = Preconditions::parse(request.headers());
        match pre.evaluate(false, current.map(validators)) {
            Outcome::Proceed => Ok(Admitted { pre, room, owner }),
            _ => Err(precondition_failed()),
        }
    }

    /// A store failure of a write, with the owner's quota for a `quota-exceeded` answer. A
    /// body refused while streaming ends its connection after the answer (its rest was read
    /// and dropped, within bounds: see [`upload`]).
    async fn write_failure(&self, error: store::Error, owner: Option<&str>) -> Problem {
        let refused_body = matches!(
            &error,
            store::Error::Body(e)
                if matches!(upload::body_error(e), Some(BodyError::TooLarge(_) | BodyError::OverQuota(_)))
        );
        let problem = self.write_problem(error, owner).await;
        match refused_body {
            true => problem.header(CONNECTION, HeaderValue::from_static("close")),
            false => problem,
        }
    }

    pub(super) async fn write_problem(&self, error: store::Error, owner: Option<&str>) -> Problem {
        let live = self.settings();
        let terms = owner.and_then(|o| live.meter.plan_of(o));
        let (Some(owner), Some((plan, terms))) = (owner, terms) else { return error.into() };
        match &error {
            store::Error::OverQuota(over) => match over.resources {
                Some(resources) => resources_exceeded(resources, terms.files, plan),
                None => quota_exceeded(over.used, terms.storage, over.needed, plan),
            },
            store::Error::Body(e)
                if matches!(upload::body_error(e), Some(BodyError::OverQuota(_))) =>
            {
                let who = owner.to_owned();
                let used = self.state_call(move |state| state.usage(&who)).await.unwrap_or(0);
                let Some(BodyError::OverQuota(room)) = upload::body_error(e) else {
                    return error.into();
                };
                quota_exceeded(used, terms.storage, room + 1, plan)
            }
            _ => error.into(),
        }
    }

    /// PUT: replaces or creates the resource, or makes the collection, at `path`.
    pub(super) async fn put(
        &self,
        path: ResourcePath,
        current: Option<Entry>,
        principal: Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let declared = media::declared(request.headers())?;
        let owner = current.as_ref().and_then(|c| c.owner.clone()).or(principal.account_owned());
        let admitted = self.admit_write(&request, current.as_ref(), owner, true).await?;
        let pre = admitted.pre;
        let check = move |now: Option<&Entry>| match pre.evaluate(false, now.map(validators)) {
            Outcome::Proceed => Ok(()),
            _ => Err(precondition_failed()),
        };
        let result = if path.is_collection() {
            if !body_is_empty(&request) {
                return Err(Problem::new(
                    Slug::BadRequest,
                    "A collection is made with an empty body.",
                ));
            }
            let upload = Upload {
                content_type: None,
                owner: principal.account_owned(),
                quotas: self.settings().meter.quotas(),
                text: None,
            };
            self.store.create_collection(&path, upload, check).await
        } else {
            let text = text_check(declared.as_deref(), path.name());
            let upload = Upload {
                content_type: declared,
                owner: principal.account_owned(),
                quotas: self.settings().meter.quotas(),
                text: text.clone(),
            };
            let body = checked(self.upload_body(request, admitted.room), text);
            self.store.put(&path, upload, body, check).await
        };
        match result {
            Ok(put) => Ok(stored(put?)),
            Err(e) => Err(self.write_failure(e, admitted.owner.as_deref()).await),
        }
    }

    /// POST to a collection: a raw body becomes a resource with a server-chosen name; a
    /// multipart form stores each file part.
    pub(super) async fn post(
        &self,
        collection: &Entry,
        principal: Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let declared = media::declared(request.headers())?;
        let content_type = content_type(request.headers());
        let multipart = declared.as_deref().and_then(|ct| {
            ct.starts_with("multipart/form-data").then_some(content_type.as_deref()).flatten()
        });
        let owner = principal.account_owned();
        let admitted =
            self.admit_write(&request, Some(collection), owner, multipart.is_none()).await?;
        if let Some(ct) = multipart {
            let boundary = multer::parse_boundary(ct).map_err(|_| {
                Problem::new(Slug::BadRequest, "The multipart body has no valid boundary.")
            })?;
            let room = admitted.room.map(|room| room + MULTIPART_SLACK);
            let body = self.upload_body(request, room);
            return self.post_multipart(collection, principal, body, boundary).await;
        }
        let extension = declared
            .as_deref()
            .and_then(|ct| mime_guess::get_mime_extensions_str(ct.split(';').next().unwrap_or("")))
            .and_then(|exts| exts.first())
            .map(|ext| format!(".{ext}"))
            .unwrap_or_default();
        let name = format!("{:016x}{extension}", rand::random::<u64>());
        let path = collection.path.child(&name, false)?;
        self.authorize(&principal, &path, Action::Create)?;
        let text = text_check(declared.as_deref(), path.name());
        let upload = Upload {
            content_type: declared,
            owner: principal.account_owned(),
            quotas: self.settings().meter.quotas(),
            text: text.clone(),
        };
        let body = checked(self.upload_body(request, admitted.room), text);
        match self.store.put(&path, upload, body, must_be_new).await {
            Ok(put) => Ok(stored(put?)),
            Err(e) => Err(self.write_failure(e, admitted.owner.as_deref()).await),
        }
    }

    /// A multipart form's file parts, all or nothing: a failure at any part removes the
    /// parts this request had stored (those still as it left them), and says so.
    async fn post_multipart(
        &self,
        collection: &Entry,
        principal: Principal,
        body: ByteStream,
        boundary: String,
    ) -> Result<Response<Body>, Problem> {
        let mut created = Vec::new();
        if let Err(mut problem) =
            self.store_parts(collection, &principal, body, boundary, &mut created).await
        {
            if !created.is_empty() {
                let removed = self.remove_parts(&created).await;
                problem.member("removed", json!(removed));
                problem.append_detail(&format!(
                    " The {} files this request had stored were removed; nothing of it stays.",
                    removed.len()
                ));
            }
            return Err(problem);
        }
        let Some(first) = created.first() else {
            return Err(Problem::new(Slug::BadRequest, "The form has no file parts."));
        };
        let described: Vec<_> = created.iter().map(|p| listing::describe(&p.entry)).collect();
        let mut response = json_response(StatusCode::CREATED, &json!({ "created": described }));
        insert_location(response.headers_mut(), &first.entry.path);
        Ok(response)
    }

    /// Removes the parts a failed form stored, each only if it is still the version stored
    /// (a later write wins); their paths.
    async fn remove_parts(&self, created: &[store::Put]) -> Vec<String> {
        let mut removed = Vec::new();
        for put in created {
            let etag = put.entry.etag.clone();
            let unchanged = move |now: Option<&Entry>| match now.map(|e| &e.etag) {
                Some(current) if *current == etag => Ok(()),
                _ => Err(()),
            };
            match self.store.delete(&put.entry.path, false, unchanged).await {
                Ok(Ok(())) => removed.push(put.entry.path.to_string()),
                Ok(Err(())) => {}
                Err(e) => tracing::error!("cannot remove {} of a failed form: {e}", put.entry.path),
            }
        }
        removed
    }

    /// Stores a form's file parts, in order, into `created`; the first failure.
    async fn store_parts(
        &self,
        collection: &Entry,
        principal: &Principal,
        body: ByteStream,
        boundary: String,
        created: &mut Vec<store::Put>,
    ) -> Result<(), Problem> {
        let principal = principal.clone();
        let mut form = multer::Multipart::new(body, boundary);
        let owner = principal.account_owned();
        loop {
            let field = match form.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => {
                    let io = from_multer(e);
                    if upload::body_error(&io).is_none() {
                        return Err(Problem::new(
                            Slug::BadRequest,
                            format!("The multipart body is malformed: {io}."),
                        ));
                    }
                    return Err(self.write_failure(store::Error::Body(io), owner.as_deref()).await);
                }
            };
            let Some(file_name) = field.file_name().map(str::to_owned) else { continue };
            // Browsers may send a path; keep its last component.
            let base = file_name.rsplit(['/', '\\']).next().unwrap_or("").to_owned();
            let path = self.free_name(&principal, &collection.path, &base).await?;
            let content_type = field.content_type().map(media::normal);
            let text = text_check(content_type.as_deref(), path.name());
            let upload = Upload {
                content_type,
                owner: owner.clone(),
                quotas: self.settings().meter.quotas(),
                text: text.clone(),
            };
            let stream: ByteStream =
                Box::pin(futures_util::StreamExt::map(field, |chunk| chunk.map_err(from_multer)));
            let stream = checked(stream, text);
            match self.store.put(&path, upload, stream, must_be_new).await {
                Ok(put) => created.push(put?),
                Err(e) => return Err(self.write_failure(e, owner.as_deref()).await),
            }
        }
        Ok(())
    }

    /// `name` in `collection`, or `name-1`, `name-2`… (before the extension) if taken. Each
    /// name is first decided by the rules as a PUT creating it would be: a refusal refuses
    /// the part. A name is looked up only where `principal` may know what is there (it may
    /// read or list it), so the name chosen never depends on a resource hidden from it;
    /// elsewhere the name is taken as it is, and a clash is a conflict.
    async fn free_name(
        &self,
        principal: &Principal,
        collection: &ResourcePath,
        name: &str,
    ) -> Result<ResourcePath, Problem> {
        let (stem, ext) = match name.rfind('.') {
            Some(dot) if dot > 0 => name.split_at(dot),
            _ => (name, ""),
        };
        for n in 0..100 {
            let candidate = if n == 0 { name.to_owned() } else { format!("{stem}-{n}{ext}") };
            let path = collection.child(&candidate, false)?;
            self.authorize(principal, &path, Action::Create)?;
            let known = [Action::Read, Action::List]
                .into_iter()
                .any(|action| self.authorize(principal, &path, action).is_ok());
            if !known || self.store.open(&path).await?.is_none() {
                return Ok(path);
            }
        }
        Err(Problem::new(Slug::Conflict, format!("Too many resources are named like {name}.")))
    }

    /// DELETE: the resource, or the collection with its members (RFC 4918 §9.6.1: without
    /// `Depth`, as with `Depth: infinity`); `Depth: 0` removes a collection only if empty.
    pub(super) async fn delete(
        &self,
        entry: &Entry,
        request: &Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let recursive = match request.headers().get(HeaderName::from_static("depth")) {
            None => true,
            Some(v) if v.as_bytes().eq_ignore_ascii_case(b"infinity") => true,
            Some(v) if v.as_bytes() == b"0" => false,
            Some(_) => {
                return Err(Problem::new(
                    Slug::BadRequest,
                    "DELETE takes Depth: infinity (the default) or 0 (only if empty).",
                ));
            }
        };
        let pre = self.admit_write(request, Some(entry), None, false).await?.pre;
        let check = move |now: Option<&Entry>| match pre.evaluate(false, now.map(validators)) {
            Outcome::Proceed => Ok(()),
            _ => Err(precondition_failed()),
        };
        self.store.delete(&entry.path, recursive, check).await??;
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }
}

/// A UTF-8 check for a body of type `declared` (or, without one, the type its name suggests)
/// when that is text without a charset.
fn text_check(declared: Option<&str>, name: &str) -> Option<Arc<Utf8Check>> {
    let media = match declared {
        Some(declared) => declared.to_owned(),
        None => store::guess_type(name),
    };
    let parsed = media.parse::<mime::Mime>().ok()?;
    let textual = store::text::is_textual(&parsed.essence_str().to_ascii_lowercase());
    (textual && parsed.get_param(mime::CHARSET).is_none()).then(|| Arc::new(Utf8Check::new(media)))
}

/// `body`, each chunk shown to `check` on its way to the store.
fn checked(body: ByteStream, check: Option<Arc<Utf8Check>>) -> ByteStream {
    let Some(check) = check else { return body };
    Box::pin(futures_util::StreamExt::map(body, move |chunk| {
        if let Ok(bytes) = &chunk {
            check.feed(bytes);
        }
        chunk
    }))
}

fn must_be_new(current: Option<&Entry>) -> Result<(), Problem> {
    match current {
        None => Ok(()),
        Some(_) => {
            Err(Problem::new(Slug::Conflict, "A resource with this name appeared meanwhile."))
        }
    }
}

/// multer's error as an I/O error, with the [`BodyError`] that caused it (if any) brought
/// back to the top, so 413 and 402 are told apart from a malformed form.
fn from_multer(error: multer::Error) -> std::io::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match upload::body_error(io) {
                Some(BodyError::TooLarge(limit)) => {
                    return std::io::Error::other(BodyError::TooLarge(*limit));
                }
                Some(BodyError::OverQuota(room)) => {
                    return std::io::Error::other(BodyError::OverQuota(*room));
                }
                Some(BodyError::Aborted(_)) => {
                    return std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        io.to_string(),
                    );
                }
                None => {}
            }
        }
        source = e.source();
    }
    std::io::Error::new(std::io::ErrorKind::InvalidData, error)
}
