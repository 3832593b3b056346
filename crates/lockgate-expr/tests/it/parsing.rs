//! Literals, named values and the parse errors of the legacy engine (kind, offending token, message).

use lockgate_expr::{ErrorKind, ParseOptions, Value, Version, parse};

use crate::{eval, s};

/// Parses under condition options and returns the error's legacy kind name and offending text.
fn parse_error(text: &str) -> (String, String, String) {
    let e = parse(text, &ParseOptions::condition()).expect_err(text);
    (
        e.kind.legacy_name().to_string(),
        e.span.text(text).to_string(),
        e.message,
    )
}

#[test]
fn literals() {
    assert_eq!(eval("True"), Value::Boolean(true));
    assert_eq!(eval("-.5"), Value::Number(-0.5));
    assert_eq!(eval("1."), Value::Number(1.0));
    assert_eq!(eval("'It''s'"), s("It's"));
    assert_eq!(eval("''"), s(""));
    assert_eq!(
        eval("1.2.3"),
        Value::Version(Version::parse("1.2.3").unwrap())
    );
    assert_eq!(eval("1.2"), Value::Number(1.2));
    assert_eq!(eval(" \t\n eq(\n1,\r\n1 ) "), Value::Boolean(true));
}

#[test]
fn malformed_literals_are_unrecognized_values() {
    assert_eq!(parse_error("eq(1.2, 3.4a)").0, "UnrecognizedValue");
    assert_eq!(parse_error("eq(1.2, 3.4a)").1, "3.4a");
    assert_eq!(parse_error("eq(1.2.3, 4.5.6.7a)").1, "4.5.6.7a");
    assert_eq!(parse_error("lt(0.9.o.9, 1.0.0)").1, "0.9.o.9");
    let (kind, token, message) = parse_error("eq('hello', 'unterminated-string)");
    assert_eq!(
        (kind.as_str(), token.as_str()),
        ("UnrecognizedValue", "'unterminated-string)")
    );
    assert!(message.contains("not closed"), "{message}");
    assert_eq!(parse_error("eq(1, -)").1, "-");
    assert_eq!(parse_error("1.2.3.4.5").1, "1.2.3.4.5");
}

#[test]
fn misplaced_symbols_are_unexpected() {
    assert_eq!(
        parse_error("3 + 4"),
        (
            "UnexpectedSymbol".into(),
            "+".into(),
            "unexpected symbol: '+'".into()
        )
    );
    assert_eq!(parse_error("and(3 + 4)").1, "+");
    assert_eq!(parse_error("eq(1, 2) 3").1, "3");
    assert_eq!(parse_error("eq(1,, 2)").1, ",");
    assert_eq!(parse_error("eq(1, )").1, ")");
    assert_eq!(parse_error("eq(1 2)").1, "2");
    assert_eq!(parse_error("eq(1, 2, 3)").1, ",");
    assert_eq!(parse_error("not()").1, ")");
    assert_eq!(parse_error("always(1)").1, ")");
    assert_eq!(parse_error("'abc'[0]").1, "[");
    assert_eq!(parse_error("'abc'.length").1, ".");
    assert_eq!(parse_error("variables(1)").1, "(");
    assert_eq!(parse_error("variables[]").1, "]");
    assert_eq!(parse_error(")").1, ")");
    assert_eq!(parse_error("variables.param-minus").0, "UnexpectedSymbol");
    assert_eq!(parse_error("variables.param-minus").1, "param-minus");
}

#[test]
fn unclosed_calls_and_indexes() {
    assert_eq!(
        parse_error("eq(1,2"),
        (
            "UnclosedFunction".into(),
            "eq".into(),
            "unclosed function: 'eq'".into()
        )
    );
    assert_eq!(parse_error("eq(1,").0, "UnclosedFunction");
    assert_eq!(parse_error("eq(variables['a'").0, "UnclosedIndexer");
    assert_eq!(parse_error("eq(variables['a'").1, "[");
    assert_eq!(parse_error("variables[").0, "UnclosedIndexer");
    assert_eq!(parse_error("variables['a')").1, ")");
}

#[test]
fn function_names_need_parentheses_and_dots_need_names() {
    assert_eq!(
        parse_error("eq"),
        (
            "ExpectedStartParameter".into(),
            "eq".into(),
            "expected '(' after the function name 'eq'".into()
        )
    );
    assert_eq!(parse_error("not 1").0, "ExpectedStartParameter");
    assert_eq!(parse_error("variables.").0, "ExpectedPropertyName");
    assert_eq!(parse_error("variables.'a'").1, "'a'");
}

#[test]
fn unknown_functions_and_named_values_depend_on_the_options() {
    let e = parse("nothing()", &ParseOptions::template()).unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.message.as_str()),
        (
            ErrorKind::UnrecognizedFunction,
            "unrecognized function: 'nothing'."
        )
    );
    assert_eq!(e.kind.legacy_name(), "UnrecognizedValue");
    let e = parse("nothing", &ParseOptions::template()).unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.message.as_str()),
        (
            ErrorKind::UnrecognizedNamedValue,
            "unrecognized named-value: 'nothing'."
        )
    );
    // Status functions exist only in conditions, counter only in runtime expressions, parameters only in templates.
    assert!(parse("succeeded()", &ParseOptions::template()).is_err());
    assert!(parse("succeeded()", &ParseOptions::runtime()).is_err());
    assert!(parse("succeeded()", &ParseOptions::condition()).is_ok());
    assert!(parse("parameters.a", &ParseOptions::runtime()).is_err());
    assert!(parse("parameters.a", &ParseOptions::template()).is_ok());
    assert!(parse("dependencies.a.result", &ParseOptions::template()).is_err());
    assert!(
        parse(
            "loopItem.name",
            &ParseOptions::template().with_named_value("loopItem")
        )
        .is_ok()
    );
    // A syntax-only parse accepts any function and named value, but not bad syntax.
    let syntax = ParseOptions::syntax_only();
    assert!(
        parse(
            "or(eq(1, noSuch()), eq(2, other(1,2,3,4,5,6,7,8,9,10)))",
            &syntax
        )
        .is_ok()
    );
    assert!(parse("eq(1, noSuchNamedValue['foo'])", &syntax).is_ok());
    assert!(
        parse(
            "replace h(coalesce(parameters.y, parameters.y), '''', '''''')",
            &syntax
        )
        .is_err()
    );
    assert!(parse("and(always(1), succeeded('a', 'b'), counter())", &syntax).is_ok());
    assert!(parse("eq(1)", &syntax).is_err());
}

#[test]
fn names_and_keywords_ignore_case() {
    assert!(parse("EQ(Variables['x'], TRUE)", &ParseOptions::condition()).is_ok());
    assert!(parse("StartsWith(VARIABLES.x, 'a')", &ParseOptions::condition()).is_ok());
}

#[test]
fn errors_describe_their_position() {
    let text = "eq(1, 3.4a)";
    let e = parse(text, &ParseOptions::condition()).unwrap_err();
    assert_eq!(
        e.describe(text),
        "unrecognized value: '3.4a' (at position 7 in expression: eq(1, 3.4a))"
    );
    assert_eq!(e.to_string(), "unrecognized value: '3.4a'");
}

#[test]
fn empty_and_blank_expressions_are_errors() {
    assert!(parse("", &ParseOptions::condition()).is_err());
    assert!(parse("   ", &ParseOptions::condition()).is_err());
}
