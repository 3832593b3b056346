//! Fuzz target for the expression parser: any input must give an expression or an error value, never a panic or
//! a stack overflow; whatever parses must print to a canonical form that parses back to the same tree, and must
//! evaluate (to a value or an error) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockgate_expr::{MapContext, Object, ParseOptions, Value, parse};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut context = MapContext::new();
    context.set_variable("Build.SourceBranch", "refs/heads/main");
    let mut parameters = Object::new();
    parameters.insert("list", Value::Array(vec![Value::from("a"), Value::Number(1.0)]));
    context.set("parameters", Value::Object(parameters));

    let unlimited = ParseOptions { max_length: usize::MAX, max_depth: usize::MAX, ..ParseOptions::syntax_only() };
    for options in [ParseOptions::condition(), ParseOptions::template(), ParseOptions::runtime(), unlimited] {
        let Ok(expression) = parse(&text, &options) else { continue };
        let printed = expression.to_string();
        let relaxed = ParseOptions { max_length: usize::MAX, ..options.clone() };
        match parse(&printed, &relaxed) {
            Ok(again) => assert_eq!(expression, again, "{text:?} printed as {printed:?}"),
            Err(error) => panic!("{text:?} printed as {printed:?} does not parse: {error}"),
        }
        let _ = expression.evaluate(&context);
    }
});
