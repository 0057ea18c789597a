//! WebDAV's XML: request bodies read into a small tree by quick-xml (namespaces resolved, no
//! DTD, bounded depth and size), and the answers' elements written with quick-xml's escaping.

use quick_xml::escape::{escape, partial_escape, resolve_predefined_entity};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// The DAV: namespace.
pub const DAV: &str = "DAV:";
/// Elements nested deeper than this are refused: nothing WebDAV sends needs more.
const MAX_DEPTH: usize = 64;
/// Elements in one body.
const MAX_ELEMENTS: usize = 10_000;

/// A namespace-qualified name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name {
    /// The namespace URI ("" for none).
    pub ns: String,
    /// The local name.
    pub local: String,
}

impl Name {
    /// A name in the DAV: namespace.
    pub fn dav(local: &str) -> Name {
        Name { ns: DAV.into(), local: local.into() }
    }

    /// Clark notation, `{ns}local`: how dead properties are keyed.
    pub fn clark(&self) -> String {
        format!("{{{}}}{}", self.ns, self.local)
    }

    /// The name a [`Name::clark`] string stands for.
    pub fn from_clark(text: &str) -> Option<Name> {
        let rest = text.strip_prefix('{')?;
        let (ns, local) = rest.split_once('}')?;
        Some(Name { ns: ns.into(), local: local.into() })
    }

    fn is_dav(&self, local: &str) -> bool {
        self.ns == DAV && self.local == local
    }
}

/// An element of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Its name.
    pub name: Name,
    /// Its children, text included (whitespace-only text between elements dropped).
    pub children: Vec<Node>,
}

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data, unescaped.
    Text(String),
}

impl Element {
    /// The child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element in DAV: named `local`.
    pub fn child(&self, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.name.is_dav(local))
    }

    /// The element's content as XML, each element carrying its namespace as a default
    /// declaration, so that it means the same wherever it is written again.
    pub fn inner_xml(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            write_node(child, &mut out);
        }
        out
    }
}

fn write_node(node: &Node, out: &mut String) {
    match node {
        Node::Text(text) => out.push_str(&escape(text.as_str())),
        Node::Element(e) => {
            out.push('<');
            out.push_str(&e.name.local);
            out.push_str(" xmlns=\"");
            out.push_str(&escape(e.name.ns.as_str()));
            out.push('"');
            if e.children.is_empty() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            for child in &e.children {
                write_node(child, out);
            }
            out.push_str("</");
            out.push_str(&e.name.local);
            out.push('>');
        }
    }
}

/// Reads a body into its root element; `Ok(None)` for an empty body.
pub fn parse(body: &[u8]) -> Result<Option<Element>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let mut count = 0;
    loop {
        let (resolved, event) =
            reader.read_resolved_event().map_err(|e| format!("the body is not XML: {e}"))?;
        let name_of = |resolved: ResolveResult<'_>, local: &[u8]| -> Result<Name, String> {
            let ns = match resolved {
                ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.into_inner()).into_owned(),
                ResolveResult::Unbound => String::new(),
                ResolveResult::Unknown(prefix) => {
                    return Err(format!(
                        "the prefix {} is not declared",
                        String::from_utf8_lossy(&prefix)
                    ));
                }
            };
            Ok(Name { ns, local: String::from_utf8_lossy(local).into_owned() })
        };
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) => {
                count += 1;
                if count > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err("the body is too deeply nested or too large".into());
                }
                let name = name_of(resolved, start.local_name().into_inner())?;
                let element = Element { name, children: Vec::new() };
                if empty {
                    close(&mut stack, &mut root, element)?;
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or("an end tag without its start")?;
                close(&mut stack, &mut root, element)?;
            }
            Event::Text(t) => {
                let t = t.decode().map_err(|e| format!("bad text: {e}"))?;
                push_text(&mut stack, &t)?;
            }
            Event::CData(c) => {
                let t = c.decode().map_err(|e| format!("bad text: {e}"))?;
                push_text(&mut stack, &t)?;
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("the entity &{name}; is not defined"))?
                            .to_owned()
                    }
                };
                push_text(&mut stack, &text)?;
            }
            Event::DocType(_) => return Err("a DOCTYPE is not accepted".into()),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err("the body ends inside an element".into());
    }
    root.map(Some).ok_or_else(|| "the body has no element".into())
}

fn close(
    stack: &mut [Element],
    root: &mut Option<Element>,
    element: Element,
) -> Result<(), String> {
    let mut element = element;
    // Whitespace between child elements is layout; whitespace as a whole value is kept.
    if element.children.iter().any(|n| matches!(n, Node::Element(_))) {
        element.children.retain(|n| !matches!(n, Node::Text(t) if t.trim().is_empty()));
    }
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None if root.is_none() => *root = Some(element),
        None => return Err("the body has more than one root element".into()),
    }
    Ok(())
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), String> {
    match stack.last_mut() {
        Some(parent) => {
            match parent.children.last_mut() {
                Some(Node::Text(t)) => t.push_str(text),
                _ => parent.children.push(Node::Text(text.to_owned())),
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err("text outside the root element".into()),
    }
}

/// What a PROPFIND asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropFind {
    /// Every property (`allprop`, or an empty body), with the `include`d ones.
    All(Vec<Name>),
    /// Only names.
    Names,
    /// These properties.
    Some(Vec<Name>),
}

/// Reads a PROPFIND body.
pub fn propfind(body: &[u8]) -> Result<PropFind, String> {
    let Some(root) = parse(body)? else { return Ok(PropFind::All(Vec::new())) };
    if !root.name.is_dav("propfind") {
        return Err("the body is not a DAV:propfind".into());
    }
    let names = |e: &Element| e.elements().map(|p| p.name.clone()).collect::<Vec<_>>();
    if let Some(prop) = root.child("prop") {
        return Ok(PropFind::Some(names(prop)));
    }
    if root.child("propname").is_some() {
        return Ok(PropFind::Names);
    }
    if root.child("allprop").is_some() {
        return Ok(PropFind::All(root.child("include").map(names).unwrap_or_default()));
    }
    Err("a DAV:propfind needs prop, propname or allprop".into())
}

/// One instruction of a PROPPATCH, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Set a property to a value (XML).
    Set(Name, String),
    /// Remove a property.
    Remove(Name),
}

/// Reads a PROPPATCH body.
pub fn propertyupdate(body: &[u8]) -> Result<Vec<Update>, String> {
    let root = parse(body)?.ok_or("a PROPPATCH needs a body")?;
    if !root.name.is_dav("propertyupdate") {
        return Err("the body is not a DAV:propertyupdate".into());
    }
    let mut updates = Vec::new();
    for instruction in root.elements() {
        let set = match instruction.name.local.as_str() {
            "set" if instruction.name.ns == DAV => true,
            "remove" if instruction.name.ns == DAV => false,
            _ => continue,
        };
        let prop = instruction.child("prop").ok_or("set and remove hold a DAV:prop")?;
        for property in prop.elements() {
            updates.push(match set {
                true => Update::Set(property.name.clone(), property.inner_xml()),
                false => Update::Remove(property.name.clone()),
            });
        }
    }
    if updates.is_empty() {
        return Err("the DAV:propertyupdate changes nothing".into());
    }
    Ok(updates)
}

/// What a LOCK asks for (none: a refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// Exclusive, else shared.
    pub exclusive: bool,
    /// The `owner` element's content, as XML.
    pub owner: Option<String>,
}

/// Reads a LOCK body; `Ok(None)` when there is none (a refresh).
pub fn lockinfo(body: &[u8]) -> Result<Option<LockInfo>, String> {
    let Some(root) = parse(body)? else { return Ok(None) };
    if !root.name.is_dav("lockinfo") {
        return Err("the body is not a DAV:lockinfo".into());
    }
    let scope = root.child("lockscope").ok_or("a DAV:lockinfo needs a lockscope")?;
    let exclusive = match (scope.child("exclusive"), scope.child("shared")) {
        (Some(_), None) => true,
        (None, Some(_)) => false,
        _ => return Err("the lockscope is exclusive or shared".into()),
    };
    let kind = root.child("locktype").ok_or("a DAV:lockinfo needs a locktype")?;
    if kind.child("write").is_none() {
        return Err("only write locks exist".into());
    }
    Ok(Some(LockInfo { exclusive, owner: root.child("owner").map(Element::inner_xml) }))
}

/// Builds a `multistatus` answer (or another DAV: document) as text.
pub struct Writer {
    out: String,
}

impl Writer {
    /// A document whose root element is DAV:`root`.
    pub fn new(root: &str) -> Writer {
        let mut out = String::with_capacity(1024);
        out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:");
        out.push_str(root);
        out.push_str(" xmlns:D=\"DAV:\">");
        Writer { out }
    }

    /// A fragment: elements without a root, to put into a document.
    pub fn fragment() -> Writer {
        Writer { out: String::new() }
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// What was written.
    pub fn into_string(self) -> String {
        self.out
    }

    /// Opens DAV:`local`.
    pub fn open(&mut self, local: &str) -> &mut Self {
        self.out.push_str("<D:");
        self.out.push_str(local);
        self.out.push('>');
        self
    }

    /// Closes DAV:`local`.
    pub fn close(&mut self, local: &str) -> &mut Self {
        self.out.push_str("</D:");
        self.out.push_str(local);
        self.out.push('>');
        self
    }

    /// DAV:`local` holding `text`, escaped.
    pub fn text(&mut self, local: &str, text: &str) -> &mut Self {
        self.open(local);
        self.out.push_str(&partial_escape(text));
        self.close(local)
    }

    /// An empty DAV:`local`.
    pub fn empty(&mut self, local: &str) -> &mut Self {
        self.out.push_str("<D:");
        self.out.push_str(local);
        self.out.push_str("/>");
        self
    }

    /// The element `name` holding `inner`, XML that larder wrote (a kept dead property's
    /// value, from [`Element::inner_xml`]), or empty.
    pub fn property(&mut self, name: &Name, inner: Option<&str>) -> &mut Self {
        let (open, close) = match name.ns.as_str() {
            DAV => (format!("D:{}", name.local), format!("D:{}", name.local)),
            ns => (format!("{} xmlns=\"{}\"", name.local, escape(ns)), name.local.clone()),
        };
        match inner {
            Some(inner) if !inner.is_empty() => {
                self.out.push('<');
                self.out.push_str(&open);
                self.out.push('>');
                self.out.push_str(inner);
                self.out.push_str("</");
                self.out.push_str(&close);
                self.out.push('>');
            }
            _ => {
                self.out.push('<');
                self.out.push_str(&open);
                self.out.push_str("/>");
            }
        }
        self
    }

    /// Raw XML that larder wrote.
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.out.push_str(xml);
        self
    }

    /// The document, its root closed.
    pub fn finish(mut self, root: &str) -> Vec<u8> {
        self.close(root);
        self.out.push('\n');
        self.out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propfind_forms() {
        assert_eq!(propfind(b"").unwrap(), PropFind::All(vec![]));
        let body = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>
            <D:getetag/><x:a xmlns:x="urn:x"/></D:prop></D:propfind>"#;
        let PropFind::Some(names) = propfind(body).unwrap() else { panic!() };
        assert_eq!(
            names,
            vec![Name::dav("getetag"), Name { ns: "urn:x".into(), local: "a".into() }]
        );
        assert!(propfind(b"<propfind/>").is_err(), "no namespace: not DAV:propfind");
        assert!(propfind(b"<D:propfind xmlns:D='DAV:'><D:prop>").is_err());
        assert!(propfind(b"<x:propfind/>").is_err(), "an undeclared prefix");
    }

    #[test]
    fn no_entities_beyond_the_five() {
        let bomb =
            br#"<!DOCTYPE d [<!ENTITY a "aaaa">]><D:propfind xmlns:D="DAV:">&a;</D:propfind>"#;
        assert!(propfind(bomb).is_err());
        let body = br#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><z:v xmlns:z="urn:z">a&amp;&#x10348;</z:v></D:prop></D:set></D:propertyupdate>"#;
        let updates = propertyupdate(body).unwrap();
        assert_eq!(
            updates,
            vec![Update::Set(
                Name { ns: "urn:z".into(), local: "v".into() },
                "a&amp;\u{10348}".into()
            )]
        );
    }

    #[test]
    fn values_keep_their_namespaces() {
        let body = br#"<D:propertyupdate xmlns:D="DAV:" xmlns:t="urn:t"><D:set><D:prop>
            <t:v><t:inner>x</t:inner><other xmlns="urn:o"/></t:v></D:prop></D:set></D:propertyupdate>"#;
        let updates = propertyupdate(body).unwrap();
        let Update::Set(_, value) = &updates[0] else { panic!() };
        assert_eq!(value, r#"<inner xmlns="urn:t">x</inner><other xmlns="urn:o"/>"#);
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
