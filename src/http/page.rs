//! The web interface: a collection's HTML page (rendered whole here, so browsing and downloading
//! work without JavaScript) and the script and style sheet that make it interactive, embedded in
//! the binary and served under `/.larder/ui/`. Every name is escaped; the page allows no inline
//! script or style (see [`CSP`]).

use std::sync::LazyLock;
use std::time::UNIX_EPOCH;

use crate::store::Entry;

/// The Content-Security-Policy of every HTML page larder writes: its own script, style,
/// images, frames (PDF previews) and fetches only; nothing inline, no plugins, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; media-src 'self'; frame-src 'self'; connect-src 'self'; \
    form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Adds the headers every HTML page carries: [`CSP`], no MIME sniffing, no referrer outside.
pub fn secure_headers(headers: &mut http::HeaderMap) {
    use http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
    headers.insert(CONTENT_SECURITY_POLICY, http::HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, http::HeaderValue::from_static("same-origin"));
}

const TEMPLATE: &str = include_str!("../../ui/page.html");

/// An embedded file of the interface.
pub struct Asset {
    /// The bytes.
    pub bytes: &'static [u8],
    /// Its media type.
    pub content_type: &'static str,
    /// Its strong entity tag's opaque value, without quotes.
    pub etag: String,
}

static ASSETS: LazyLock<Vec<(&'static str, Asset)>> = LazyLock::new(|| {
    let asset = |bytes: &'static [u8], content_type| {
        let etag = crate::store::hex(&blake3::hash(bytes).as_bytes()[..12]);
        Asset { bytes, content_type, etag }
    };
    vec![
        ("app.js", asset(include_bytes!("../../ui/app.js"), "text/javascript; charset=utf-8")),
        ("app.css", asset(include_bytes!("../../ui/app.css"), "text/css; charset=utf-8")),
    ]
});

/// The embedded file called `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(n, _)| *n == name).map(|(_, asset)| asset)
}

/// What a listing is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The member's name.
    Name,
    /// Its length.
    Size,
    /// Its media type.
    Type,
    /// Its last change.
    Modified,
}

/// A listing's order: a column, ascending or not. Collections always come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// The column.
    pub column: Column,
    /// Largest, latest or last first.
    pub descending: bool,
}

impl Order {
    /// Reads `sort=name|size|type|modified` and `order=asc|desc` from a query; anything else
    /// is the default, by name ascending.
    pub fn from_query(query: Option<&str>) -> Order {
        let mut order = Order { column: Column::Name, descending: false };
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("sort", "size")) => order.column = Column::Size,
                Some(("sort", "type")) => order.column = Column::Type,
                Some(("sort", "modified")) => order.column = Column::Modified,
                Some(("order", "desc")) => order.descending = true,
                _ => {}
            }
        }
        order
    }

    /// Sorts `rows`, folders first; names compare without case (each lowered once).
    /// Sorts `entries` in this order, folders first.
    pub fn sort(self, entries: &mut Vec<&Entry>) {
        let mut keyed: Vec<_> =
            entries.drain(..).map(|entry| (entry.path.name().to_lowercase(), entry)).collect();
        keyed.sort_by(|(a_name, a), (b_name, b)| {
            let by = match self.column {
                Column::Name => std::cmp::Ordering::Equal,
                Column::Size => a.size.cmp(&b.size),
                Column::Type => type_of(a).cmp(type_of(b)),
                Column::Modified => a.modified.cmp(&b.modified),
            }
            .then_with(|| a_name.cmp(b_name));
            let by = if self.descending { by.reverse() } else { by };
            b.is_collection().cmp(&a.is_collection()).then(by)
        });
        entries.extend(keyed.into_iter().map(|(_, entry)| entry));
    }

    /// The query that asks for this order (empty for the default).
    fn query(self) -> String {
        let column = match self.column {
            Column::Name if !self.descending => return String::new(),
            Column::Name => "name",
            Column::Size => "size",
            Column::Type => "type",
            Column::Modified => "modified",
        };
        let order = if self.descending { "desc" } else { "asc" };
        format!("sort={column}&amp;order={order}")
    }
}

/// Rows shown on one page of a collection's listing.
pub const PAGE_ROWS: usize = 1000;

/// Where a page of a listing is among the others, and what the whole holds.
pub struct Pages {
    /// This page, from 1.
    pub page: usize,
    /// How many pages there are (at least 1).
    pub pages: usize,
    /// Folders, over every page.
    pub folders: usize,
    /// Files, over every page.
    pub files: usize,
    /// The files' bytes, over every page.
    pub bytes: u64,
}

/// One member of the listing, as the caller sees it.
pub struct Row<'a> {
    /// The member.
    pub entry: &'a Entry,
    /// Its price, when it has one.
    pub price: Option<u64>,
    /// Whether the caller must buy it before reading it.
    pub due: bool,
    /// Whether the caller bought it.
    pub bought: bool,
    /// Whether the caller may delete it.
    pub deletable: bool,
}

/// A collection's page.
pub struct Listing<'a> {
    /// The collection.
    pub collection: &'a Entry,
    /// Its members the caller may see, on this page, in order.
    pub rows: Vec<Row<'a>>,
    /// Which page, of how many, and the totals of all.
    pub pages: Pages,
    /// The signed-in account.
    pub account: Option<&'a str>,
    /// Whether the caller may create members.
    pub writable: bool,
    /// The order asked for.
    pub order: Order,
}

/// Renders `listing` as an HTML page.
pub fn render(listing: Listing<'_>) -> Vec<u8> {
    let path = listing.collection.path.to_url();
    let heading = escape(&listing.collection.path.as_key());
    let priced = listing.rows.iter().any(|row| row.price.is_some());
    let mut rows = String::new();
    for row in &listing.rows {
        push_row(&mut rows, row, priced);
    }
    let Pages { folders, files, bytes, .. } = listing.pages;
    let summary = match (folders, files) {
        (0, 0) => "This folder is empty.".to_owned(),
        _ => format!(
            "{} and {}, {} in all.",
            plural(folders, "folder"),
            plural(files, "file"),
            human_size(bytes)
        ),
    };
    let account = listing.account.unwrap_or_default();
    let who = match listing.account {
        Some(name) => format!("Signed in as <strong>{}</strong>", escape(name)),
        None => String::new(),
    };
    let page = fill(
        TEMPLATE,
        &[
            ("title", &heading),
            ("path", &escape(&path)),
            ("account", &escape(account)),
            ("can_write", if listing.writable { "true" } else { "false" }),
            ("crumbs", &crumbs(listing.collection)),
            ("who", &who),
            ("heading", &heading),
            ("columns", &columns(listing.order, priced)),
            ("rows", &rows),
            ("summary", &summary),
            ("pager", &pager(&listing.pages, listing.order)),
            // A sorted view is the same folder again: crawlers and `wget -r` leave it be.
            (
                "robots",
                match listing.order.query().is_empty() {
                    true => "",
                    false => "<meta name=\"robots\" content=\"noindex, nofollow\">\n",
                },
            ),
        ],
    );
    page.into_bytes()
}

fn push_row(out: &mut String, row: &Row<'_>, priced: bool) {
    let entry = row.entry;
    let collection = entry.is_collection();
    let mut name = escape(entry.path.name());
    if collection {
        name.push('/');
    }
    let modified = entry.modified.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let stamp = humantime::format_rfc3339_seconds(entry.modified).to_string();
    let shown = stamp.get(..16).unwrap_or(&stamp).replace('T', " ");
    out.push_str(&format!(
        "<tr data-kind=\"{}\" data-name=\"{}\" data-size=\"{}\" data-type=\"{}\" \
         data-modified=\"{modified}\" data-etag=\"{}\"{}{}{}{}>",
        if collection { "collection" } else { "resource" },
        escape(entry.path.name()),
        entry.size,
        escape(type_of(entry)),
        escape(&entry.etag.as_ref().map(|e| format!("\"{e}\"")).unwrap_or_default()),
        row.price.map(|p| format!(" data-price=\"{p}\"")).unwrap_or_default(),
        if row.due { " data-due" } else { "" },
        if row.bought { " data-bought" } else { "" },
        if row.deletable { " data-deletable" } else { "" },
    ));
    let size = match collection {
        true => String::from("<td class=\"size\"></td>"),
        false => format!(
            "<td class=\"size\"><span title=\"{} bytes\">{}</span></td>",
            entry.size,
            human_size(entry.size)
        ),
    };
    out.push_str(&format!(
        "<td class=\"name\"><a href=\"{}\">{name}</a></td>{size}<td class=\"type\">{}</td>\
         <td class=\"modified\"><time datetime=\"{stamp}\">{shown}</time></td>",
        escape(&entry.path.to_url()),
        escape(type_of(entry)),
    ));
    if priced {
        let price = match (row.price, row.bought, row.due) {
            (Some(_), true, _) => "Bought".to_owned(),
            (Some(p), false, true) => format!("{p} credits"),
            (Some(p), false, false) => format!("{p} credits, free for you"),
            (None, _, _) => String::new(),
        };
        out.push_str(&format!("<td class=\"price\">{price}</td>"));
    }
    out.push_str("<td class=\"actions\"></td></tr>\n");
}

/// Links to the pages before and after this one, when there are others.
fn pager(pages: &Pages, order: Order) -> String {
    if pages.pages <= 1 {
        return String::new();
    }
    let sort = order.query();
    let link = |page: usize, rel: &str, label: &str| {
        let query = match (sort.is_empty(), page) {
            (true, 1) => "?".to_owned(),
            (true, _) => format!("?page={page}"),
            (false, 1) => format!("?{sort}"),
            (false, _) => format!("?{sort}&amp;page={page}"),
        };
        format!("<a rel=\"{rel}\" href=\"{query}\">{label}</a>")
    };
    let mut out = String::from("<nav class=\"pager\" aria-label=\"Pages\">");
    if pages.page > 1 {
        out.push_str(&link(pages.page - 1, "prev", "Previous page"));
    }
    out.push_str(&format!(" <span>Page {} of {}</span> ", pages.page, pages.pages));
    if pages.page < pages.pages {
        out.push_str(&link(pages.page + 1, "next", "Next page"));
    }
    out.push_str("</nav>");
    out
}

fn columns(order: Order, priced: bool) -> String {
    let mut out = String::new();
    for (column, key, label) in [
        (Column::Name, "name", "Name"),
        (Column::Size, "size", "Size"),
        (Column::Type, "type", "Type"),
        (Column::Modified, "modified", "Modified"),
    ] {
        let current = order.column == column;
        let sort = match (current, order.descending) {
            (true, false) => " aria-sort=\"ascending\"",
            (true, true) => " aria-sort=\"descending\"",
            (false, _) => "",
        };
        let next = if current && !order.descending { "desc" } else { "asc" };
        out.push_str(&format!(
            "<th scope=\"col\" class=\"{key}\" data-sort=\"{key}\"{sort}>\
             <form method=\"get\"><input type=\"hidden\" name=\"sort\" value=\"{key}\">\
             <button name=\"order\" value=\"{next}\">{label}</button></form></th>"
        ));
    }
    if priced {
        out.push_str("<th scope=\"col\" class=\"price\">Price</th>");
    }
    out
}

fn crumbs(collection: &Entry) -> String {
    let segments = collection.path.segments();
    let mut out = String::new();
    let mut href = String::from("/");
    let last = segments.len();
    let current = |at: usize| if at == last { " aria-current=\"page\"" } else { "" };
    out.push_str(&format!("<li><a href=\"/\"{}>Home</a></li>", current(0)));
    for (i, segment) in segments.iter().enumerate() {
        href.push_str(&crate::path::encode_segment(segment));
        href.push('/');
        out.push_str(&format!(
            "<li><a href=\"{}\"{}>{}</a></li>",
            escape(&href),
            current(i + 1),
            escape(segment)
        ));
    }
    out
}

/// The type shown: a folder, or the media type without its parameters (`charset=utf-8`).
fn type_of(entry: &Entry) -> &str {
    match entry.is_collection() {
        true => "folder",
        false => {
            let media = entry.content_type.as_deref().unwrap_or("application/octet-stream");
            media.split(';').next().unwrap_or(media).trim()
        }
    }
}

fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `bytes` in B, KiB, MiB, GiB or TiB, one decimal past the first unit.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Replaces each `{{key}}` of `template` with its value, in one pass: a value that looks like a
/// placeholder stays as it is.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let key = &after[..end];
        match values.iter().find(|(k, _)| *k == key) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape("<script>\"'&"), "&lt;script&gt;&quot;&#39;&amp;");
    }

    #[test]
    fn fills_in_one_pass() {
        let values = [("a", "{{b}}"), ("b", "x")];
        assert_eq!(fill("<{{a}}|{{b}}|{{c}}>", &values), "<{{b}}|x|{{c}}>");
    }

    #[test]
    fn orders() {
        assert_eq!(Order::from_query(None), Order { column: Column::Name, descending: false });
        let order = Order::from_query(Some("sort=size&order=desc"));
        assert_eq!(order, Order { column: Column::Size, descending: true });
        assert_eq!(Order::from_query(Some("sort=%3Cx&order=up")).column, Column::Name);
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
    }
}
