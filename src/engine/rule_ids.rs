//! Stable rule ids across SIGHUP reloads. An offense names its rule by id; the ban table keeps
//! each id's texts and lengths. At start a rule's id is its index in the config; a reload keeps
//! the id of every rule whose name is still there (wherever it moved in the file) and gives new
//! names new ids, so offenses already on their way from the shards, bans and the recidive history
//! all keep meaning the rule they were made under. A name is never given another id.

use crate::engine::RuleSpec;

/// The names seen since start, by id.
#[derive(Clone, Debug, Default)]
pub struct RuleIds {
    names: Vec<String>,
}

/// Ids are `u16` in offenses; a process that saw this many distinct rule names should restart.
const MAX_IDS: usize = u16::MAX as usize;

impl RuleIds {
    /// The ids of the first config: `0..rules.len()`.
    pub fn new(rules: &[RuleSpec]) -> RuleIds {
        RuleIds {
            names: rules.iter().map(|r| r.name.clone()).collect(),
        }
    }

    /// The id of each rule of `rules`, in order; `None` when there would be too many ids.
    pub fn assign(&mut self, rules: &[RuleSpec]) -> Option<Vec<u16>> {
        let mut ids = Vec::with_capacity(rules.len());
        let mut names = self.names.clone();
        for r in rules {
            let id = match names.iter().position(|n| *n == r.name) {
                Some(i) => i,
                None if names.len() < MAX_IDS => {
                    names.push(r.name.clone());
                    names.len() - 1
                }
                None => return None,
            };
            ids.push(id as u16);
        }
        self.names = names;
        Some(ids)
    }

    /// Every name seen, by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rule::tests::spec;

    #[test]
    fn a_rule_keeps_its_id_wherever_it_moves_and_new_names_get_new_ids() {
        let mut ids = RuleIds::new(&[spec("a", 1000, 1), spec("b", 1000, 1)]);
        let moved = [spec("c", 1000, 1), spec("b", 2000, 9), spec("a", 1000, 1)];
        assert_eq!(ids.assign(&moved), Some(vec![2, 1, 0]));
        // "c" removed, then back: same id; "d" is new.
        assert_eq!(ids.assign(&[spec("a", 1000, 1)]), Some(vec![0]));
        assert_eq!(
            ids.assign(&[spec("d", 1000, 1), spec("c", 1000, 1)]),
            Some(vec![3, 2])
        );
        assert_eq!(ids.names(), ["a", "b", "c", "d"]);
    }
}
