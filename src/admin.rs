//! The `/.larder/` namespace: larder's own endpoints (health, problem pages, the signed-in
//! account, bearer tokens). Nothing can be stored here: a path that names no endpoint is 404
//! for every method, and an endpoint's other methods are 405. Bodies are JSON.
//!
//! Tokens made with a token are never wider than it: the same scope or a narrower one,
//! read-only if it is, expiring no later than it does.

use std::time::Duration;

use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Identity, TokenRequest, limit_of, new_token, now_seconds};
use crate::config::{Settings, parse_duration};
use crate::http::problem::{Problem, Slug};
use crate::http::{
    Body, Verb, empty, forbidden, full, json_response, method_not_allowed, no_content_with,
    out_of_scope, read_json, unauthenticated,
};
use crate::path::ResourcePath;
use crate::state::{State, TokenRecord};

/// What the endpoints need besides the request.
pub struct Context<'a> {
    /// The settings in force.
    pub settings: &'a Settings,
    /// The state database.
    pub state: &'a std::sync::Arc<State>,
    /// Who is asking.
    pub identity: &'a Identity,
}

enum Endpoint {
    Health,
    Problem(Slug),
    Account,
    Tokens,
    Token(String),
}

impl Endpoint {
    fn allow(&self) -> &'static [Verb] {
        match self {
            Endpoint::Health | Endpoint::Problem(_) | Endpoint::Account => {
                &[Verb::Get, Verb::Head, Verb::Options]
            }
            Endpoint::Tokens => &[Verb::Get, Verb::Head, Verb::Post, Verb::Options],
            Endpoint::Token(_) => &[Verb::Get, Verb::Head, Verb::Delete, Verb::Options],
        }
    }

    fn needs_account(&self) -> bool {
        matches!(self, Endpoint::Account | Endpoint::Tokens | Endpoint::Token(_))
    }
}

/// Answers a request for `/.larder/` + `rest` (the segments after `.larder`).
pub async fn respond(
    context: &Context<'_>,
    verb: Verb,
    rest: &[String],
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let endpoint = match rest.as_slice() {
        ["health"] => Endpoint::Health,
        ["problems", slug] => {
            Endpoint::Problem(Slug::from_name(slug).ok_or_else(Problem::not_found)?)
        }
        ["account"] => Endpoint::Account,
        ["tokens"] => Endpoint::Tokens,
        ["tokens", id] => Endpoint::Token((*id).to_owned()),
        _ => return Err(Problem::not_found()),
    };
    let account = context.identity.principal.account.clone();
    if endpoint.needs_account() && account.is_none() {
        return Err(unauthenticated(&context.settings.realm, None));
    }
    let allow = endpoint.allow();
    if !allow.contains(&verb) {
        return Err(method_not_allowed(verb, allow));
    }
    let account = account.unwrap_or_default();
    let response = match (endpoint, verb) {
        (_, Verb::Options) => no_content_with(ALLOW, allow_value(allow)),
        (Endpoint::Health, _) => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        (Endpoint::Problem(slug), _) => problem_page(slug),
        (Endpoint::Account, _) => {
            json_response(StatusCode::OK, &describe_account(context, &account))
        }
        (Endpoint::Tokens, Verb::Post) => create_token(context, &account, request).await?,
        (Endpoint::Tokens, _) => {
            let tokens = blocking(context, move |state| state.tokens_of(&account)).await?;
            json_response(
                StatusCode::OK,
                &json!({ "tokens": tokens.iter().map(describe_token).collect::<Vec<_>>() }),
            )
        }
        (Endpoint::Token(id), Verb::Delete) => revoke_token(context, account, id).await?,
        (Endpoint::Token(id), _) => {
            let tokens = blocking(context, move |state| state.tokens_of(&account)).await?;
            let token = tokens.iter().find(|t| t.id == id).ok_or_else(Problem::not_found)?;
            json_response(StatusCode::OK, &describe_token(token))
        }
    };
    Ok(if verb == Verb::Head { strip_body(response) } else { response })
}

fn allow_value(allow: &[Verb]) -> HeaderValue {
    let text = allow.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("GET"))
}

fn strip_body(response: Response<Body>) -> Response<Body> {
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, empty())
}

async fn blocking<T: Send + 'static>(
    context: &Context<'_>,
    work: impl FnOnce(&State) -> std::io::Result<T> + Send + 'static,
) -> Result<T, Problem> {
    let state = context.state.clone();
    match tokio::task::spawn_blocking(move || work(&state)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::error!("state database: {e}");
            Err(Problem::internal())
        }
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Problem::internal()),
    }
}

fn rfc3339(seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn describe_token(token: &TokenRecord) -> Value {
    json!({
        "id": token.id,
        "scope": token.scope,
        "read_only": token.read_only,
        "created_at": rfc3339(token.created),
        "expires_at": token.expires.map(rfc3339),
        "expired": token.expires.is_some_and(|at| at <= now_seconds()),
    })
}

fn describe_account(context: &Context<'_>, name: &str) -> Value {
    let configured = context.settings.accounts.get(name);
    json!({
        "name": name,
        "admin": configured.is_some_and(|a| a.admin),
        "plan": configured.and_then(|a| a.plan.clone()),
        "signed_in_with": if context.identity.token.is_some() { "token" } else { "password" },
        "token": context.identity.token.as_ref().map(describe_token),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    scope: Option<String>,
    read_only: Option<bool>,
    expires_in: Option<Lifetime>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Lifetime {
    Seconds(u64),
    Text(String),
}

async fn create_token(
    context: &Context<'_>,
    account: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let body: NewToken = read_json(request).await?;
    let bad = |detail: String| Problem::new(Slug::BadRequest, detail);
    let scope = match &body.scope {
        Some(text) => Some(
            ResourcePath::parse(text)
                .map_err(|e| bad(format!("scope: `{text}` is not a path: {e}.")))?,
        ),
        None => None,
    };
    let expires_in = match &body.expires_in {
        Some(Lifetime::Seconds(n)) => Some(Duration::from_secs(*n)),
        Some(Lifetime::Text(text)) => {
            Some(parse_duration(text).map_err(|e| bad(format!("expires_in: {e}.")))?)
        }
        None => None,
    };
    if expires_in == Some(Duration::ZERO) {
        return Err(bad("expires_in: a token must live at least a second.".into()));
    }
    // Unless told, a token made with a read-only token is read-only too.
    let inherited = context.identity.token.as_ref().is_some_and(|t| t.read_only);
    let read_only = body.read_only.unwrap_or(inherited);
    let mut wanted = TokenRequest { scope, read_only, expires_in };
    // A token may only make tokens narrower than itself.
    if let Some(parent) = &context.identity.token {
        let limit = limit_of(parent);
        let parent_scope =
            ResourcePath::parse(&parent.scope).unwrap_or_else(|_| ResourcePath::root());
        let scope = wanted.scope.get_or_insert(parent_scope);
        if !scope.segments().starts_with(&limit.scope) || (limit.read_only && !wanted.read_only) {
            return Err(out_of_scope(&context.settings.realm));
        }
        if let Some(at) = parent.expires {
            let left = Duration::from_secs((at - now_seconds()).max(1) as u64);
            wanted.expires_in = Some(wanted.expires_in.map_or(left, |asked| asked.min(left)));
        }
    }
    let (record, secret) = new_token(account, &wanted);
    let stored = record.clone();
    blocking(context, move |state| state.insert_token(&stored)).await?;
    tracing::info!(account, token_id = %record.id, "token created");
    let mut document = describe_token(&record);
    document["token"] = Value::String(secret);
    let mut response = json_response(StatusCode::CREATED, &document);
    if let Ok(location) = HeaderValue::from_str(&format!("/.larder/tokens/{}", record.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn revoke_token(
    context: &Context<'_>,
    account: String,
    id: String,
) -> Result<Response<Body>, Problem> {
    // A limited token may revoke itself and tokens within its own reach, nothing wider.
    if let Some(current) = &context.identity.token
        && current.id != id
    {
        let limit = limit_of(current);
        if limit.read_only {
            return Err(out_of_scope(&context.settings.realm));
        }
        let (owner, wanted) = (account.clone(), id.clone());
        let tokens = blocking(context, move |state| state.tokens_of(&owner)).await?;
        if let Some(target) = tokens.iter().find(|t| t.id == wanted)
            && !limit_of(target).scope.starts_with(&limit.scope)
        {
            return Err(forbidden("A token may only revoke tokens within its own scope."));
        }
    }
    let who = account.clone();
    let gone = blocking(context, move |state| state.delete_token(&who, &id)).await?;
    if !gone {
        return Err(Problem::not_found());
    }
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

fn problem_page(slug: Slug) -> Response<Body> {
    let text = format!(
        "{} ({} {})\n\n{}\n",
        slug.title(),
        slug.status().as_u16(),
        slug.status().canonical_reason().unwrap_or(""),
        slug.explanation()
    );
    let len = text.len();
    let mut response = Response::new(full(text));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}
