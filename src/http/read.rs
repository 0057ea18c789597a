//! Reads: a resource (whole, one range, several ranges as `multipart/byteranges`, after its
//! preconditions) and a collection's listing.

use std::collections::HashSet;
use std::time::SystemTime;

use super::inbound::Inbound;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderValue, LAST_MODIFIED, RANGE, VARY,
};
use http::{Request, Response, StatusCode};

use super::compress;
use super::conditional::{Outcome, Preconditions, Validators};
use super::payment::{Charge, LARDER_CHARGED, refund_on_error};
use super::problem::{Problem, Slug};
use super::{
    App, Body, Live, Verb, body, empty, full, listing, not_modified, page, precondition_failed,
    range, representation_headers,
};
use crate::access::{Action, Decision, Principal, Rules};
use crate::meter::{Price, price_for};
use crate::store::{ByteStream, Entry, Store};

/// A resource's answer: `headers` (its representation's, and a range's) with `body`, of
/// `body_len` bytes, and what was `charged` for it.
fn answer(
    status: StatusCode,
    headers: http::HeaderMap,
    body: Body,
    body_len: Option<u64>,
    charged: Option<u64>,
    entry: &Entry,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    *out = headers;
    if let Some(price) = charged {
        out.insert(LARDER_CHARGED, HeaderValue::from(price));
    }
    if let Some(len) = body_len {
        out.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    out.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    super::media::confine(out, entry.content_type.as_deref());
    response
}

impl<S: Store> App<S> {
    /// GET or HEAD of a resource: preconditions, ranges, then the bytes; a one-step purchase
    /// (`charge`) is made last, once nothing else can fail.
    pub(super) async fn get(
        &self,
        verb: Verb,
        entry: &Entry,
        handle: Option<S::Handle>,
        request: &Request<Inbound>,
        charge: Option<Charge>,
    ) -> Result<Response<Body>, Problem> {
        let pre = Preconditions::parse(request.headers());
        let mut headers = representation_headers(entry);
        let attachment = super::media::wants_download(request.uri().query());
        headers
            .insert(CONTENT_DISPOSITION, super::media::disposition(entry.path.name(), attachment));
        // A compressible whole answer goes in the coding the client prefers, with that
        // coding's own tag; a range is taken from the identity coding.
        let compressible = compress::compressible(entry.content_type.as_deref())
            && entry.size >= compress::MIN_SIZE;
        let coding = match compressible && !request.headers().contains_key(RANGE) {
            true => compress::choose(request.headers().get(ACCEPT_ENCODING)),
            false => None,
        };
        let tagged = coding.zip(entry.etag.as_deref()).map(|(c, etag)| c.tag(etag));
        let validators = Validators {
            etag: tagged.as_deref().or(entry.etag.as_deref()),
            modified: Some(entry.modified),
        };
        if compressible {
            headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        if let Some(tag) =
            tagged.as_deref().and_then(|t| HeaderValue::from_str(&format!("\"{t}\"")).ok())
        {
            headers.insert(ETAG, tag);
        }
        match pre.evaluate(true, Some(validators)) {
            Outcome::Proceed => {}
            Outcome::NotModified => {
                let mut response = not_modified(entry);
                for name in [ETAG, VARY] {
                    if let Some(value) = headers.get(&name) {
                        response.headers_mut().insert(name, value.clone());
                    }
                }
                return Ok(response);
            }
            Outcome::Failed => return Err(precondition_failed()),
        }
        if let Some(coding) = coding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
        }
        let len = entry.size;
        let ranges = match request.headers().get(RANGE).and_then(|v| v.to_str().ok()) {
            Some(field) if verb == Verb::Get && pre.range_applies(validators) => {
                range::resolve(field, len)
            }
            _ => range::Ranges::Whole,
        };
        let handle = handle.ok_or_else(Problem::internal)?;
        // A small hot file, whole and unpriced: its bytes as they are, no stream.
        if let (range::Ranges::Whole, Verb::Get, None, None) = (&ranges, verb, &charge, coding)
            && let Some(whole) = self.store.in_memory(&handle).filter(|b| b.len() as u64 == len)
        {
            return Ok(answer(StatusCode::OK, headers, full(whole), Some(len), None, entry));
        }
        let (status, body_len, bytes) = match ranges {
            range::Ranges::Whole => {
                let bytes = match verb {
                    Verb::Head => None,
                    _ => Some(match self.store.in_memory(&handle) {
                        Some(whole) => once(whole.to_vec()),
                        None => self.store.read(&handle, 0, len).await?,
                    }),
                };
                match coding {
                    // Its length is known once it is sent: no Content-Length.
                    Some(coding) => {
                        (StatusCode::OK, None, bytes.map(|b| compress::encode(b, coding)))
                    }
                    None => (StatusCode::OK, Some(len), bytes),
                }
            }
            range::Ranges::Unsatisfiable => {
                let value = HeaderValue::from_str(&format!("bytes */{len}"))
                    .map_err(|_| Problem::internal())?;
                return Err(Problem::new(
                    Slug::RangeNotSatisfiable,
                    format!("No requested range overlaps the {len} bytes of this resource."),
                )
                .header(CONTENT_RANGE, value));
            }
            range::Ranges::Parts(parts) if parts.len() == 1 => {
                let (first, last) = parts[0];
                let range = format!("bytes {first}-{last}/{len}");
                headers.insert(
                    CONTENT_RANGE,
                    HeaderValue::from_str(&range).map_err(|_| Problem::internal())?,
                );
                let bytes = Some(self.store.read(&handle, first, last - first + 1).await?);
                (StatusCode::PARTIAL_CONTENT, Some(last - first + 1), bytes)
            }
            range::Ranges::Parts(parts) => {
                let content_type = entry.content_type.clone().unwrap_or_default();
                let boundary =
                    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
                let mut pieces: Vec<ByteStream> = Vec::new();
                let mut total = 0u64;
                for (first, last) in parts {
                    let head = format!(
                        "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {first}-{last}/{len}\r\n\r\n"
                    );
                    total += head.len() as u64 + (last - first + 1);
                    pieces.push(once(head.into_bytes()));
                    pieces.push(self.store.read(&handle, first, last - first + 1).await?);
                }
                let tail = format!("\r\n--{boundary}--\r\n");
                total += tail.len() as u64;
                pieces.push(once(tail.into_bytes()));
                let multipart = format!("multipart/byteranges; boundary={boundary}");
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_str(&multipart).map_err(|_| Problem::internal())?,
                );
                let stream: ByteStream = Box::pin(futures_util::stream::iter(pieces).flatten());
                (StatusCode::PARTIAL_CONTENT, Some(total), Some(stream))
            }
        };
        let mut charged = None;
        let bytes = match (charge, bytes) {
            (Some(charge), Some(bytes)) => match self.collect(charge, entry).await? {
                Some(purchase) => {
                    charged = Some(purchase.price);
                    refund_on_error(bytes, self.state.clone(), purchase)
                }
                None => bytes,
            },
            (_, bytes) => bytes.unwrap_or_else(|| Box::pin(futures_util::stream::empty())),
        };
        let body = if verb == Verb::Head { empty() } else { body::stream(bytes) };
        Ok(answer(status, headers, body, body_len, charged, entry))
    }

    /// GET or HEAD of a collection: the members the caller may read, priced ones marked.
    pub(super) async fn listing(
        &self,
        verb: Verb,
        entry: &Entry,
        principal: &Principal,
        request: &Request<Inbound>,
    ) -> Result<Response<Body>, Problem> {
        let all = self.store.list(&entry.path).await?;
        let members: Vec<&Entry> = all
            .iter()
            .filter(|m| {
                self.settings().rules.listed(principal, m.path.segments(), m.is_collection())
            })
            .collect();
        let modified = members.iter().map(|m| m.modified).fold(entry.modified, SystemTime::max);
        let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
        let live = self.settings();
        let rules = &live.rules;
        let query = request.uri().query();
        let (bytes, content_type, next) = match listing::negotiate(accept, query) {
            listing::Format::Json => {
                let price = |member: &Entry| list_price(rules, member);
                let (page, next) = listing::json(entry, &members, price, query)?;
                (page, "application/json", next)
            }
            listing::Format::Html => {
                let page = self.page(&live, entry, members, principal, query).await?;
                (page, "text/html; charset=utf-8", None)
            }
        };
        // Validators of what this caller gets: a tag of the bytes themselves (so one that
        // changes with a member, a price, a purchase or the caller), and the latest change of
        // the collection or a member.
        let etag = format!("l{}", crate::store::hex(&blake3::hash(&bytes).as_bytes()[..16]));
        let coding = match bytes.len() as u64 >= compress::MIN_SIZE {
            true => compress::choose(request.headers().get(ACCEPT_ENCODING)),
            false => None,
        };
        let etag = coding.map_or(etag.clone(), |c| c.tag(&etag));
        let vary = HeaderValue::from_static("Accept, Accept-Encoding, Cookie");
        let validators = Validators { etag: Some(&etag), modified: Some(modified) };
        let quoted = HeaderValue::from_str(&format!("\"{etag}\"")).ok();
        match Preconditions::parse(request.headers()).evaluate(true, Some(validators)) {
            Outcome::Proceed => {}
            Outcome::NotModified => {
                let mut response = Response::new(empty());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                let headers = response.headers_mut();
                if let Some(quoted) = quoted {
                    headers.insert(ETAG, quoted);
                }
                headers.insert(VARY, vary);
                return Ok(response);
            }
            Outcome::Failed => return Err(super::precondition_failed()),
        }
        let len = bytes.len();
        let body = match (verb, coding) {
            (Verb::Head, _) => empty(),
            (_, Some(coding)) => body::stream(compress::encode(once(bytes), coding)),
            (_, None) => full(bytes),
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        match coding {
            Some(coding) => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
            }
            None => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
        headers.insert(VARY, vary);
        if let Some(quoted) = quoted {
            headers.insert(ETAG, quoted);
        }
        headers
            .insert(LAST_MODIFIED, super::last_modified(&Entry::collection(&entry.path, modified)));
        if let Some(next) =
            next.and_then(|n| HeaderValue::from_str(&format!("<{n}>; rel=\"next\"")).ok())
        {
            headers.insert(http::header::LINK, next);
        }
        if content_type.starts_with("text/html") {
            page::secure_headers(headers);
        }
        Ok(response)
    }
}

impl<S: Store> App<S> {
    /// The HTML page of `collection`: each member with what the caller may do with it, and
    /// what it must pay (one look at the caller's purchases when anything here is priced).
    async fn page(
        &self,
        live: &Live,
        collection: &Entry,
        mut members: Vec<&Entry>,
        principal: &Principal,
        query: Option<&str>,
    ) -> Result<Vec<u8>, Problem> {
        let rules = &live.rules;
        // One page of the whole, sorted as asked: the sort spans every page.
        let order = page::Order::from_query(query);
        let number = match listing::query_value(query, "page") {
            None => 1,
            Some(text) => text.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Problem::new(Slug::BadRequest, "page: a whole number from 1 is needed.")
            })?,
        };
        let folders = members.iter().filter(|m| m.is_collection()).count();
        let pages = page::Pages {
            page: number,
            pages: members.len().div_ceil(page::PAGE_ROWS).max(1),
            folders,
            files: members.len() - folders,
            bytes: members.iter().map(|m| m.size).sum(),
        };
        order.sort(&mut members);
        let start = (number - 1).saturating_mul(page::PAGE_ROWS).min(members.len());
        let end = start.saturating_add(page::PAGE_ROWS).min(members.len());
        let members = &members[start..end];
        let allowed = |entry: &Entry, action| {
            rules.decide(principal, entry.path.segments(), action) == Decision::Allow
        };
        let price_of = |member: &Entry| list_price(rules, member);
        let bought: HashSet<String> = match &principal.account {
            Some(account) if members.iter().any(|m| price_of(m).is_some()) => {
                let account = account.clone();
                let purchases = self.state_call(move |state| state.purchases_of(&account)).await?;
                purchases.into_iter().map(|p| p.path).collect()
            }
            _ => HashSet::new(),
        };
        let rows = members
            .iter()
            .map(|member| {
                let owner = member.owner.as_deref();
                let due = matches!(
                    price_for(rules, principal, member.path.segments(), owner),
                    Price::Due(_)
                );
                let paid = due && bought.contains(&member.path.as_key());
                page::Row {
                    entry: member,
                    price: price_of(member),
                    due: due && !paid,
                    bought: paid,
                    deletable: allowed(member, Action::Delete),
                }
            })
            .collect();
        Ok(page::render(page::Listing {
            collection,
            rows,
            pages,
            account: principal.account.as_deref(),
            writable: allowed(collection, Action::Create),
            order,
        }))
    }
}

/// The price a listing shows for `member`: its rule's, for resources.
fn list_price(rules: &Rules, member: &Entry) -> Option<u64> {
    match member.is_collection() {
        true => None,
        false => rules.matching(member.path.segments()).and_then(|m| m.rule.price),
    }
}

fn once(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(bytes)) }))
}
