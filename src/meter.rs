//! Plans, quotas and prices: who may store how much, and who pays what to read. Pure: the
//! state database holds the facts (usage, balances, purchases), this module decides.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::access::{Action, Decision, Principal, Rules};
use crate::config::{Plan, Settings};
use crate::state::Quota;
use crate::store::Quotas;

/// The plans in force, by account.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    plans: BTreeMap<String, (String, Plan)>,
    quotas: Quotas,
}

impl Meter {
    /// The plans of the settings' accounts.
    pub fn new(settings: &Settings) -> Self {
        let plans: BTreeMap<String, (String, Plan)> = settings
            .accounts
            .values()
            .filter_map(|a| {
                let name = a.plan.as_ref()?;
                Some((a.name.clone(), (name.clone(), *settings.plans.get(name)?)))
            })
            .collect();
        let quotas = plans
            .iter()
            .map(|(account, (_, plan))| {
                (account.clone(), Quota { bytes: plan.storage, files: plan.files })
            })
            .collect();
        Meter { plans, quotas: Arc::new(quotas) }
    }

    /// The account's plan: its name and terms.
    pub fn plan_of(&self, account: &str) -> Option<(&str, Plan)> {
        self.plans.get(account).map(|(name, plan)| (name.as_str(), *plan))
    }

    /// Credits granted to the account when it first signs in.
    pub fn credits_of(&self, account: &str) -> u64 {
        self.plan_of(account).map_or(0, |(_, plan)| plan.credits)
    }

    /// Storage quotas by account, for the store to check writes against.
    pub fn quotas(&self) -> Quotas {
        self.quotas.clone()
    }
}

/// What reading a resource costs a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Price {
    /// Nothing: the resource has no price, or the principal reads it free.
    Free,
    /// This many credits, unless already bought.
    Due(u64),
}

/// The price of reading the resource at `segments` (owned by `owner`) for `principal`.
/// Owners, writers of the path and admins read free.
pub fn price_for(
    rules: &Rules,
    principal: &Principal,
    segments: &[String],
    owner: Option<&str>,
) -> Price {
    let Some(price) = rules.matching(segments).and_then(|m| m.rule.price).filter(|p| *p > 0) else {
        return Price::Free;
    };
    let account = principal.account.as_deref();
    let writer = [Action::Update, Action::Create].into_iter().any(|action| {
        account.is_some() && rules.decide(principal, segments, action) == Decision::Allow
    });
    if principal.admin || (account.is_some() && account == owner) || writer {
        Price::Free
    } else {
        Price::Due(price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Rule, Who};

    #[test]
    fn who_pays() {
        let shop = Rule {
            path: Rule::parse_path("/shop").unwrap(),
            read: vec![Who::Anyone],
            list: vec![Who::Anyone],
            create: vec![Who::Account("seller".into())],
            update: vec![Who::Account("seller".into())],
            price: Some(5),
            ..Rule::default()
        };
        let rules = Rules::new(vec![shop]);
        let path = vec!["shop".to_owned(), "x.pdf".to_owned()];
        let table = [
            (Principal::anonymous(), None, Price::Due(5)),
            (Principal::account("buyer", false), None, Price::Due(5)),
            (Principal::account("buyer", false), Some("buyer"), Price::Free),
            (Principal::account("seller", false), None, Price::Free),
            (Principal::account("root", true), None, Price::Free),
        ];
        for (principal, owner, want) in table {
            assert_eq!(
                price_for(&rules, &principal, &path, owner),
                want,
                "{principal:?} owner {owner:?}"
            );
        }
        assert_eq!(
            price_for(&rules, &Principal::anonymous(), &["free".to_owned()], None),
            Price::Free
        );
    }
}
