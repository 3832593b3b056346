//! Macro syntax `$(name)`: single-level expansion of a target string (task inputs), and the recursive expansion of
//! variable values that the agent performs when it initialises variables (depth limit 50, cycles left unexpanded).

use std::borrow::Cow;
use std::collections::HashMap;

use crate::value::fold_case;

/// How deep the recursive expansion of variable values may go before a value is left unexpanded.
pub const MAX_MACRO_DEPTH: usize = 50;

/// Finds the next macro at or after `from`: returns (start of `$(`, end after `)`, name).
fn next_macro(text: &str, from: usize) -> Option<(usize, usize, &str)> {
    let start = from + text.get(from..)?.find("$(")?;
    let close = start + 2 + text[start + 2..].find(')')?;
    Some((start, close + 1, &text[start + 2..close]))
}

/// Expands every `$(name)` in `text` once, with `lookup` giving a variable's value. Undefined names stay literal;
/// substituted values are not expanded again. `$($(x)` expands only the well-formed inner macro.
pub fn expand_macros<'t, F>(text: &'t str, mut lookup: F) -> Cow<'t, str>
where
    F: FnMut(&str) -> Option<String>,
{
    if !text.contains("$(") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some((start, end, name)) = next_macro(text, from) {
        match lookup(name) {
            Some(value) => {
                out.push_str(&text[copied..start]);
                out.push_str(&value);
                copied = end;
                from = end;
            }
            None => from = start + 2,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Why a variable's value was left unexpanded by [`expand_variables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacroProblem {
    /// The value refers back to itself through these variables (the first and last name are the same).
    Cycle(Vec<String>),
    /// Expanding it needs more than [`MAX_MACRO_DEPTH`] nested levels.
    TooDeep,
}

/// A variable after [`expand_variables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedVariable {
    /// The name as given.
    pub name: String,
    /// The expanded value, or the original one when `problem` is set.
    pub value: String,
    /// Why the value was left as it was, if it was.
    pub problem: Option<MacroProblem>,
}

/// Expands the macros inside variable values recursively, as the agent does when it initialises variables: a
/// value's macros are replaced by the (recursively expanded) values of the variables they name; undefined names stay
/// literal. A value involved in a cycle, or needing more than [`MAX_MACRO_DEPTH`] levels, stays entirely
/// unexpanded. Names are case-insensitive; the order of `variables` is kept.
pub fn expand_variables(variables: &[(String, String)]) -> Vec<ExpandedVariable> {
    let by_name: HashMap<String, &str> = variables
        .iter()
        .map(|(name, value)| (fold_case(name).into_owned(), value.as_str()))
        .collect();
    variables
        .iter()
        .map(|(name, value)| {
            let mut stack = vec![fold_case(name).into_owned()];
            match expand_value(value, &by_name, &mut stack) {
                Ok(expanded) => ExpandedVariable {
                    name: name.clone(),
                    value: expanded,
                    problem: None,
                },
                Err(problem) => ExpandedVariable {
                    name: name.clone(),
                    value: value.clone(),
                    problem: Some(problem),
                },
            }
        })
        .collect()
}

/// Expands `value`, whose variable chain so far is `stack` (folded names).
fn expand_value(
    value: &str,
    by_name: &HashMap<String, &str>,
    stack: &mut Vec<String>,
) -> Result<String, MacroProblem> {
    let mut out = String::with_capacity(value.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some((start, end, name)) = next_macro(value, from) {
        let key = fold_case(name).into_owned();
        let Some(inner) = by_name.get(&key) else {
            from = start + 2;
            continue;
        };
        if stack.contains(&key) {
            let mut cycle = stack.clone();
            cycle.push(key);
            return Err(MacroProblem::Cycle(cycle));
        }
        if stack.len() >= MAX_MACRO_DEPTH {
            return Err(MacroProblem::TooDeep);
        }
        stack.push(key);
        let expanded = expand_value(inner, by_name, stack)?;
        stack.pop();
        out.push_str(&value[copied..start]);
        out.push_str(&expanded);
        copied = end;
        from = end;
    }
    out.push_str(&value[copied..]);
    Ok(out)
}
