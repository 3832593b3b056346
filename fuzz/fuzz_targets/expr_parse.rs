//! Fuzz target for the expression parser: any input must give an expression or an error value, never a panic or
//! a stack overflow; whatever parses must print to a canonical form that parses back to the same tree, and must
//! evaluate (to a value or an error) without panicking. The same input also goes through `${{ }}` / `$[ ]`
//! rendering and `$(name)` macro expansion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockgate_expr::{
    MapContext, Object, ParseOptions, Syntax, Value, expand_macros, expand_variables, parse, render,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut context = MapContext::new();
    context.set_variable("Build.SourceBranch", "refs/heads/main");
    let mut parameters = Object::new();
    parameters.insert(
        "list",
        Value::Array(vec![Value::from("a"), Value::Number(1.0)]),
    );
    context.set("parameters", Value::Object(parameters));

    let unlimited = ParseOptions {
        max_length: usize::MAX,
        max_depth: usize::MAX,
        ..ParseOptions::syntax_only()
    };
    for options in [
        ParseOptions::condition(),
        ParseOptions::template(),
        ParseOptions::runtime(),
        unlimited,
    ] {
        let Ok(expression) = parse(&text, &options) else {
            continue;
        };
        let printed = expression.to_string();
        let relaxed = ParseOptions {
            max_length: usize::MAX,
            ..options.clone()
        };
        match parse(&printed, &relaxed) {
            Ok(again) => assert_eq!(expression, again, "{text:?} printed as {printed:?}"),
            Err(error) => panic!("{text:?} printed as {printed:?} does not parse: {error}"),
        }
        let _ = expression.evaluate(&context);
    }

    let _ = render(&text, Syntax::Template, &ParseOptions::template(), &context);
    let _ = render(&text, Syntax::Runtime, &ParseOptions::runtime(), &context);
    let variables = vec![
        ("a".to_string(), text.to_string()),
        ("b".to_string(), "$(a)$(c)".to_string()),
        ("c".to_string(), "$(b)".to_string()),
    ];
    let expanded = expand_variables(&variables);
    assert_eq!(expanded.len(), variables.len());
    let _ = expand_macros(&text, |name| {
        variables
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    });
});
