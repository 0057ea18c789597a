//! 402 Payment Required: priced reads, one-step purchases with `Larder-Max-Price`, and the
//! problem documents of the three 402 causes. A charge is only made once everything else has
//! succeeded, and refunded if the bytes then fail to arrive: a failed request is never
//! charged.

use std::sync::Arc;

use futures_util::StreamExt;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use serde_json::json;

use super::problem::{Problem, Slug};
use super::{App, Verb, out_of_scope, unauthenticated};
use crate::access::Principal;
use crate::meter::{Price, price_for};
use crate::state::{Bought, Purchase, State};
use crate::store::{ByteStream, Entry, Store};

/// The price, in response to an unpaid read.
pub const LARDER_PRICE: HeaderName = HeaderName::from_static("larder-price");
/// The most a client will pay to buy and read in one step.
pub const LARDER_MAX_PRICE: HeaderName = HeaderName::from_static("larder-max-price");
/// What a one-step purchase charged.
pub const LARDER_CHARGED: HeaderName = HeaderName::from_static("larder-charged");

/// A purchase to make once the read is sure to succeed.
#[derive(Debug, Clone)]
pub struct Charge {
    account: String,
    price: u64,
}

/// A 402 about a price: `Larder-Price` and the members `price`, `balance`, `currency`.
fn priced(slug: Slug, detail: String, price: u64, balance: u64) -> Problem {
    let mut problem = Problem::new(slug, detail).header(LARDER_PRICE, HeaderValue::from(price));
    problem.member("price", json!(price));
    problem.member("balance", json!(balance));
    problem.member("currency", json!("credits"));
    problem
}

/// 402 `payment-required`: the resource must be bought first.
pub fn payment_required(price: u64, balance: u64) -> Problem {
    let detail = format!(
        "This resource costs {price} credits; buy it at /.larder/purchases or send Larder-Max-Price."
    );
    let mut problem = priced(Slug::PaymentRequired, detail, price, balance);
    problem.member("purchase", json!("/.larder/purchases"));
    problem
}

/// 402 `insufficient-credits`: the balance does not cover the price.
pub fn insufficient_credits(price: u64, balance: u64) -> Problem {
    let detail =
        format!("This costs {price} credits and the balance is {balance}; nothing was charged.");
    priced(Slug::InsufficientCredits, detail, price, balance)
}

/// 402 `quota-exceeded`: storing this would take the owner past its plan's quota.
pub fn quota_exceeded(used: u64, quota: u64, needed: u64, plan: &str) -> Problem {
    let mut problem = Problem::new(
        Slug::QuotaExceeded,
        format!(
            "This needs {needed} more bytes; {used} of the {quota} bytes of plan {plan} are used. Nothing was stored."
        ),
    );
    problem.member("used", json!(used));
    problem.member("quota", json!(quota));
    problem.member("needed", json!(needed));
    problem.member("plan", json!(plan));
    problem
}

/// 402 `quota-exceeded`, for the number of resources: the owner has as many as its plan
/// allows.
pub fn resources_exceeded(resources: u64, limit: u64, plan: &str) -> Problem {
    let mut problem = Problem::new(
        Slug::QuotaExceeded,
        format!(
            "This account owns {resources} resources; plan {plan} allows {limit}. Nothing was stored."
        ),
    );
    problem.member("resources", json!(resources));
    problem.member("resources_quota", json!(limit));
    problem.member("plan", json!(plan));
    problem
}

impl<S: Store> App<S> {
    /// Decides whether a GET or HEAD of `entry` may go on: free, already bought, or to be
    /// bought in one step (the returned [`Charge`]); otherwise 401 (anonymous), 400 (a bad
    /// Larder-Max-Price) or 402.
    pub(super) async fn payment(
        &self,
        verb: Verb,
        principal: &Principal,
        entry: &Entry,
        headers: &HeaderMap,
    ) -> Result<Option<Charge>, Problem> {
        let segments = entry.path.segments();
        let Price::Due(price) =
            price_for(&self.settings().rules, principal, segments, entry.owner.as_deref())
        else {
            return Ok(None);
        };
        let Some(account) = principal.account_owned() else {
            return Err(unauthenticated(&self.settings().realm, None));
        };
        let key = entry.path.as_key();
        let who = account.clone();
        if self.state_call(move |state| state.purchase(&who, &key)).await?.is_some() {
            return Ok(None);
        }
        let max = match headers.get(LARDER_MAX_PRICE) {
            None => None,
            Some(value) => {
                Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(
                    || {
                        Problem::new(
                            Slug::BadRequest,
                            "Larder-Max-Price must be a whole number of credits.",
                        )
                    },
                )?)
            }
        };
        // A read-only token spends nothing.
        if max.is_some() && principal.read_only() {
            return Err(out_of_scope(&self.settings().realm));
        }
        // HEAD never buys: it would charge for nothing.
        if verb == Verb::Get && max.is_some_and(|max| price <= max) {
            return Ok(Some(Charge { account, price }));
        }
        let who = account.clone();
        let balance = self.state_call(move |state| state.balance(&who)).await?;
        Err(payment_required(price, balance))
    }

    /// Makes the purchase of a one-step read; `None` if it had been bought meanwhile.
    pub(super) async fn collect(
        &self,
        charge: Charge,
        entry: &Entry,
    ) -> Result<Option<Purchase>, Problem> {
        let key = entry.path.as_key();
        let Charge { account, price } = charge;
        match self.state_call(move |state| state.buy(&account, &key, price)).await? {
            Bought::New(purchase, _) => Ok(Some(purchase)),
            Bought::Existing(..) => Ok(None),
            Bought::Insufficient(balance) => Err(insufficient_credits(price, balance)),
        }
    }
}

/// Refunds `purchase` if `bytes` fails before its end: the client paid for all of them.
pub(super) fn refund_on_error(
    bytes: ByteStream,
    state: Arc<State>,
    purchase: Purchase,
) -> ByteStream {
    let mut purchase = Some(purchase);
    Box::pin(bytes.map(move |chunk| {
        if chunk.is_err()
            && let Some(purchase) = purchase.take()
        {
            let state = state.clone();
            tokio::task::spawn_blocking(move || match state.refund(&purchase) {
                Ok(()) => tracing::info!(purchase = %purchase.id, "refunded: the read failed"),
                Err(e) => tracing::error!(purchase = %purchase.id, "refund failed: {e}"),
            });
        }
        chunk
    }))
}
