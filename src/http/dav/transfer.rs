//! COPY and MOVE (RFC 4918 §9.8, §9.9; SPEC §8). Every path decided first: the source
//! (read; a priced one bought; MOVE also delete, over all beneath it from the rules alone),
//! the destination (create or update; delete of what it replaces), each member a COPY makes.
//! MOVE is the store's rename where it has one; else, as COPY then DELETE.

use http::header::{HeaderMap, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};

use super::{Depth, bad_request, depth, destination, touched};
use crate::access::{Action, Principal};
use crate::http::inbound::Inbound;
use crate::http::problem::{Problem, Slug};
use crate::http::{App, Body, Verb, empty, forbidden, precondition_failed};
use crate::path::ResourcePath;
use crate::store::{self, ByteStream, Entry, Store, Upload};

/// Members one COPY takes at most: past it, 403 before anything is made.
const MAX_MEMBERS: usize = 100_000;

/// Who owns what a copy makes: the copier (COPY), or each source's owner (MOVE by copying).
#[derive(Clone, Copy)]
enum Owners<'a> {
    Copier(&'a Principal),
    Kept,
}

impl<S: Store> App<S> {
    /// COPY or MOVE of `entry`.
    pub(in crate::http) async fn transfer(
        &self,
        verb: Verb,
        entry: Entry,
        principal: Principal,
        request: Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let headers = request.headers();
        let dest = destination(headers)?;
        let collection = entry.is_collection();
        let depth = depth(headers, Depth::Infinity)?;
        match (verb, collection, depth) {
            (Verb::Move, true, Depth::Zero | Depth::One) => {
                return Err(bad_request("A collection moves whole: Depth: infinity."));
            }
            (Verb::Copy, true, Depth::One) => {
                return Err(bad_request("A collection is copied with Depth: 0 or infinity."));
            }
            _ => {}
        }
        let from = entry.path.clone();
        let to = dest.path.with_collection(collection);
        if to.segments().first().is_some_and(|s| s == ".larder") {
            return Err(forbidden("Nothing is stored under /.larder/."));
        }
        if to.as_key() == from.as_key() {
            return Err(forbidden("The source and the destination are the same."));
        }
        if collection && to.starts_with(&from) {
            return Err(Problem::new(Slug::Conflict, "A collection cannot go inside itself."));
        }
        // The source: read was decided with the target; MOVE also removes it and all in it.
        if verb == Verb::Move {
            self.authorize(&principal, &from, Action::Delete)?;
            if collection {
                self.authorize_beneath(&principal, &from, Action::Delete)?;
            }
        }
        // The destination: before the store where the rules alone decide.
        let decided = self.authorize_before_store(Verb::Put, &to, &principal)?;
        let existing = self.store.open(&to).await?.map(|(e, _)| e);
        if !decided {
            let action = if existing.is_some() { Action::Update } else { Action::Create };
            self.authorize(&principal, &to, action)?;
        }
        let replaces_whole = existing.as_ref().is_some_and(|e| e.is_collection() || collection);
        if existing.is_some() && replaces_whole {
            // What it replaces goes first, as a DELETE would take it.
            self.authorize(&principal, &to, Action::Delete)?;
            self.authorize_beneath(&principal, &to.with_collection(true), Action::Delete)?;
        }
        if verb == Verb::Move && collection {
            self.authorize_beneath(&principal, &to, Action::Create)?;
        }
        if principal.read_only() {
            return Err(crate::http::out_of_scope(&self.settings().realm));
        }
        if existing.is_some() && !dest.overwrite {
            return Err(precondition_failed());
        }
        // Locks: the source if it goes, and the destination.
        let mut guarded = touched(&to, existing.is_none(), replaces_whole);
        if verb == Verb::Move {
            guarded.extend(touched(&from, true, collection));
        }
        self.locks_admit(headers, &principal, &from, Some(&entry), &guarded).await?;
        if !to.parent().is_root() {
            match self.store.open(&to.parent()).await? {
                Some((parent, _)) if parent.is_collection() => {}
                _ => {
                    return Err(Problem::new(
                        Slug::Conflict,
                        "The destination's parent collection does not exist.",
                    ));
                }
            }
        }
        // What the source holds, each path ruled, prices paid, before anything is made.
        let owners = match verb {
            Verb::Copy => Owners::Copier(&principal),
            _ => Owners::Kept,
        };
        let whole = verb == Verb::Move || depth == Depth::Infinity;
        let plan = self.plan(&entry, &to, &principal, whole, verb == Verb::Copy).await?;
        if let Some(existing) = existing.as_ref().filter(|_| replaces_whole) {
            self.store.delete(&existing.path, true, |_| Ok::<(), ()>(())).await?.ok();
            self.forget_locks(&existing.path.as_key()).await?;
        }
        let overwrite = dest.overwrite;
        if verb == Verb::Move {
            let check = move |_: &Entry, there: Option<&Entry>| match there {
                Some(_) if !overwrite => Err(()),
                _ => Ok(()),
            };
            match self.store.rename(&from, &to, check).await {
                Ok(Ok(put)) => {
                    self.forget_locks(&from.as_key()).await?;
                    return Ok(answer(existing.is_none(), &put.entry.path));
                }
                Ok(Err(())) => return Err(precondition_failed()),
                Err(store::Error::Unsupported) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.make(&plan, owners, overwrite).await?;
        if verb == Verb::Move {
            self.store.delete(&from, true, |_| Ok::<(), ()>(())).await?.ok();
            self.forget_locks(&from.as_key()).await?;
        }
        Ok(answer(existing.is_none(), &to))
    }

    /// What a copy of `entry` to `to` makes, in order (each collection before its members):
    /// with `whole`, all beneath; only what the caller may list when `listed_only` (COPY),
    /// each destination ruled, each priced source bought.
    async fn plan(
        &self,
        entry: &Entry,
        to: &ResourcePath,
        principal: &Principal,
        whole: bool,
        listed_only: bool,
    ) -> Result<Vec<(Entry, ResourcePath)>, Problem> {
        let live = self.settings();
        let no_headers = HeaderMap::new();
        if !entry.is_collection() {
            self.payment(Verb::Head, principal, entry, &no_headers).await?;
        }
        let mut plan = vec![(entry.clone(), to.clone())];
        let mut next = 0;
        while whole && next < plan.len() {
            let (source, target) = plan[next].clone();
            next += 1;
            if !source.is_collection() {
                continue;
            }
            for member in self.store.list(&source.path).await?.iter() {
                let segments = member.path.segments();
                if listed_only && !live.rules.listed(principal, segments, member.is_collection()) {
                    continue;
                }
                let made = target.child(member.path.name(), member.is_collection())?;
                self.authorize(principal, &made, Action::Create)?;
                if !member.is_collection() {
                    self.payment(Verb::Head, principal, member, &no_headers).await?;
                }
                plan.push((member.clone(), made));
                if plan.len() > MAX_MEMBERS {
                    return Err(forbidden("This collection has too many members to copy at once."));
                }
            }
        }
        Ok(plan)
    }

    /// Makes `plan`; a failure removes what was made of it.
    async fn make(
        &self,
        plan: &[(Entry, ResourcePath)],
        owners: Owners<'_>,
        overwrite: bool,
    ) -> Result<(), Problem> {
        // A collection copied whole, where the store makes it in one step.
        if let (Owners::Copier(principal), Some((root, _))) = (owners, plan.first())
            && root.is_collection()
        {
            let upload = self.upload_for(principal, None);
            let owner = upload.owner.clone();
            match self.store.copy_tree(plan.to_vec(), upload).await {
                Ok(_) => return self.copy_properties(plan).await,
                Err(store::Error::Unsupported) => {}
                Err(e) => return Err(self.write_problem(e, owner.as_deref()).await),
            }
        }
        let mut made = false;
        for (source, target) in plan {
            let upload = match owners {
                Owners::Copier(principal) => {
                    self.upload_for(principal, source.content_type.clone())
                }
                Owners::Kept => Upload {
                    content_type: source.content_type.clone(),
                    owner: source.owner.clone(),
                    quotas: self.settings().meter.quotas(),
                    text: None,
                },
            };
            let owner = upload.owner.clone();
            let done = match source.is_collection() {
                true => self.store.create_collection(target, upload, |_| Ok::<(), ()>(())).await,
                false => self.copy_bytes(source, target, upload, overwrite || made).await,
            };
            match done {
                Ok(Ok(_)) => made = true,
                Ok(Err(())) => return Err(precondition_failed()),
                Err(e) => {
                    if made {
                        let first = &plan[0].1;
                        let _ = self.store.delete(first, true, |_| Ok::<(), ()>(())).await;
                    }
                    return Err(self.write_problem(e, owner.as_deref()).await);
                }
            }
        }
        self.copy_properties(plan).await
    }

    /// Gives each copy in `plan` its source's dead properties.
    async fn copy_properties(&self, plan: &[(Entry, ResourcePath)]) -> Result<(), Problem> {
        let pairs: Vec<(String, String)> =
            plan.iter().map(|(s, t)| (s.path.as_key(), t.as_key())).collect();
        self.state_call(move |s| s.copy_properties(&pairs)).await
    }

    /// Writes the bytes of `source`'s current version to `target`, as a PUT would.
    async fn copy_bytes(
        &self,
        source: &Entry,
        target: &ResourcePath,
        upload: Upload,
        overwrite: bool,
    ) -> Result<Result<store::Put, ()>, store::Error> {
        let Some((now, Some(handle))) = self.store.open(&source.path).await? else {
            return Err(store::Error::NotFound);
        };
        let bytes: ByteStream = match self.store.in_memory(&handle) {
            Some(bytes) => Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
            None => self.store.read(&handle, 0, now.size).await?,
        };
        let check = move |current: Option<&Entry>| match current {
            Some(_) if !overwrite => Err(()),
            _ => Ok(()),
        };
        self.store.put(target, upload, bytes, check).await
    }
}

/// 201 with `Location` for a new destination, 204 for one replaced.
fn answer(created: bool, to: &ResourcePath) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT };
    if created && let Ok(value) = HeaderValue::from_str(&to.to_url()) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}
