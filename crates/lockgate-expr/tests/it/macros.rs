//! Macro syntax `$(name)`: single-level expansion and the agent's recursive expansion of variable values.

use lockgate_expr::{MAX_MACRO_DEPTH, MacroProblem, expand_macros, expand_variables};

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lookup<'a>(variables: &'a [(String, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        variables
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

fn expanded_value(variables: &[(String, String)], name: &str) -> String {
    expand_variables(variables)
        .into_iter()
        .find(|v| v.name == name)
        .map(|v| v.value)
        .unwrap_or_default()
}

#[test]
fn single_level_expansion_leaves_unknown_names_and_does_not_recurse() {
    let variables = vars(&[
        ("variable1", "$(variable2)"),
        ("variable2", "two"),
        ("Upper", "U"),
    ]);
    let expand = |text: &str| expand_macros(text, lookup(&variables)).into_owned();
    assert_eq!(
        expand("before $(variable1) after"),
        "before $(variable2) after"
    );
    assert_eq!(expand("$(variable2)$(variable2)"), "twotwo");
    assert_eq!(expand("$(UPPER) $(nosuch)"), "U $(nosuch)");
    assert_eq!(expand("before $($(variable2) after"), "before $(two after");
    assert_eq!(expand("$(var_$(variable2)_x)"), "$(var_two_x)");
    assert_eq!(expand("no macros $( here"), "no macros $( here");
    assert_eq!(expand("$()"), "$()");
}

#[test]
fn borrowed_when_nothing_changes() {
    let variables = vars(&[]);
    assert!(matches!(
        expand_macros("plain $(x)", lookup(&variables)),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn recursive_expansion_at_initialisation() {
    let variables = vars(&[
        ("variable1", "before$(variable2)after"),
        ("variable2", "$(variable3)world"),
        ("variable3", "hello"),
        ("partial", "$(variable3) $(missing)"),
    ]);
    assert_eq!(
        expanded_value(&variables, "variable1"),
        "beforehelloworldafter"
    );
    assert_eq!(expanded_value(&variables, "variable2"), "helloworld");
    assert_eq!(expanded_value(&variables, "partial"), "hello $(missing)");
}

#[test]
fn cycles_leave_every_value_in_the_cycle_unexpanded() {
    let variables = vars(&[
        ("a", "1_$(b)"),
        ("b", "2_$(c)"),
        ("c", "3_$(A)"),
        ("d", "uses $(a)"),
    ]);
    let result = expand_variables(&variables);
    assert_eq!(result[0].value, "1_$(b)");
    assert_eq!(result[1].value, "2_$(c)");
    assert_eq!(result[2].value, "3_$(A)");
    assert_eq!(result[3].value, "uses $(a)");
    assert!(
        matches!(&result[0].problem, Some(MacroProblem::Cycle(names)) if names.len() == 4),
        "{:?}",
        result[0]
    );
}

#[test]
fn chains_deeper_than_the_limit_stay_unexpanded() {
    let count = MAX_MACRO_DEPTH + 1;
    let variables: Vec<(String, String)> = (1..=count)
        .map(|i| {
            (
                format!("v{i}"),
                if i == count {
                    "Final value".into()
                } else {
                    format!("$(v{})", i + 1)
                },
            )
        })
        .collect();
    let result = expand_variables(&variables);
    assert_eq!(result[0].value, "$(v2)");
    assert_eq!(result[0].problem, Some(MacroProblem::TooDeep));
    assert_eq!(result[1].value, "Final value");
    assert_eq!(result[count - 2].value, "Final value");
}
