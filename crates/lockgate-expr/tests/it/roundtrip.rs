//! Property test: printing a parsed expression (its canonical form) and parsing that again gives the same tree.

use lockgate_expr::{Function, ParseOptions, parse};
use proptest::prelude::*;

fn options() -> ParseOptions {
    ParseOptions {
        max_length: usize::MAX,
        ..ParseOptions::syntax_only()
    }
}

/// Random expression text built from the grammar (literals, named values with accesses, calls).
fn expression() -> impl Strategy<Value = String> {
    let literal = prop_oneof![
        any::<bool>().prop_map(|b| if b {
            "True".to_string()
        } else {
            "false".to_string()
        }),
        (-1_000_000i64..1_000_000, 0u32..4).prop_map(|(n, scale)| {
            let text = n.abs().to_string();
            let sign = if n < 0 { "-" } else { "" };
            match scale {
                0 => format!("{sign}{text}"),
                _ => format!("{sign}{text}.{}", "5".repeat(scale as usize)),
            }
        }),
        (
            0u32..100,
            0u32..100,
            0u32..100,
            proptest::option::of(0u32..100)
        )
            .prop_map(|(a, b, c, d)| match d {
                Some(d) => format!("{a}.{b}.{c}.{d}"),
                None => format!("{a}.{b}.{c}"),
            }),
        "[a-zA-Z0-9 '{}$().,\\[\\]é]{0,12}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
    ];
    // A named value cannot be spelled like a function or a boolean.
    let name = "[a-zA-Z_][a-zA-Z0-9_]{0,8}".prop_filter("a function or boolean name", |name| {
        Function::builtin(name).is_none()
            && !name.eq_ignore_ascii_case("true")
            && !name.eq_ignore_ascii_case("false")
    });
    let named = (
        name,
        prop::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,6}", 0u8..3), 0..3),
    )
        .prop_map(|(name, path)| {
            let mut text = name;
            for (segment, kind) in path {
                match kind {
                    0 => text.push_str(&format!(".{segment}")),
                    1 => text.push_str(&format!("['{segment}']")),
                    _ => text.push_str(".*"),
                }
            }
            text
        });
    let leaf = prop_oneof![literal, named];
    leaf.prop_recursive(6, 48, 4, |inner| {
        // (name as written, fewest and most arguments)
        let functions = [
            ("and", 2, 3),
            ("OR", 2, 3),
            ("not", 1, 1),
            ("eq", 2, 2),
            ("startsWith", 2, 2),
            ("in", 2, 3),
            ("format", 1, 3),
            ("myFunction", 0, 3),
            ("coalesce", 2, 3),
        ];
        proptest::sample::select(functions.to_vec()).prop_flat_map(move |(name, min, max)| {
            prop::collection::vec(inner.clone(), min..=max)
                .prop_map(move |args| format!("{name}( {} )", args.join(" ,")))
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printing_and_parsing_again_gives_the_same_tree(text in expression()) {
        let first = parse(&text, &options()).map_err(|e| TestCaseError::fail(e.describe(&text)))?;
        let printed = first.to_string();
        let second = parse(&printed, &options()).map_err(|e| TestCaseError::fail(e.describe(&printed)))?;
        prop_assert_eq!(&first, &second, "printed as {}", printed);
        // The canonical form is a fixed point.
        prop_assert_eq!(second.to_string(), printed);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
        if let Ok(expression) = parse(&text, &options()) {
            let reparsed = parse(&expression.to_string(), &options());
            prop_assert!(reparsed.is_ok(), "{} printed as {}", text, expression);
        }
    }
}
