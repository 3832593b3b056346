//! One or more tests per built-in function, through `parse` + `evaluate`.

use lockgate_expr::{ErrorKind, MapContext, Object, ParseOptions, Value, parse};

use crate::{error, eval, eval_in, s, truthy};

fn with_parameters(parameters: Value) -> MapContext {
    let mut context = MapContext::new();
    context.set("parameters", parameters);
    context
}

fn object(entries: &[(&str, Value)]) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Object>(),
    )
}

#[test]
fn and_or_not_xor() {
    assert!(truthy("and(true, 1, 'a', 1.2.3)"));
    assert!(!truthy("and(true, '')"));
    assert!(truthy("or(false, 0, 'x')"));
    assert!(!truthy("or(false, '')"));
    assert!(truthy("not(0)"));
    assert!(!truthy("not('a')"));
    assert!(truthy("xor(true, false)"));
    assert!(!truthy("xor(1, 'a')"));
    // Short-circuit: the failing comparison is never evaluated.
    assert!(!truthy("and(false, gt(1, 'x'))"));
    assert!(truthy("or(true, gt(1, 'x'))"));
    assert!(matches!(
        error("and(true, gt(1, 'x'))").kind,
        ErrorKind::Cast { .. }
    ));
}

#[test]
fn contains_starts_with_ends_with_ignore_case_and_cast_to_string() {
    assert!(truthy("contains('ABCDE', 'bcd')"));
    assert!(!truthy("contains('ABCDE', 'x')"));
    assert!(truthy("contains(123456789, 456)"));
    assert!(truthy("contains(true, 'RU')"));
    assert!(truthy("startsWith('ABCDE', 'ab')"));
    assert!(!truthy("startswith('ABCDE', 'b')"));
    assert!(truthy("endsWith('case insensITIVE', 'INSENSitive')"));
    assert!(truthy("endsWith(1.2.3.4, 3.4)"));
    let mut context = MapContext::new();
    context.set(
        "parameters",
        object(&[("list", Value::Array(vec![s("a")]))]),
    );
    let e = eval_in("contains(parameters.list, 'a')", &context).unwrap_err();
    assert!(
        e.message
            .contains("contains() cannot convert an array to a string"),
        "{}",
        e.message
    );
}

#[test]
fn contains_value_searches_arrays_and_objects() {
    let context = with_parameters(object(&[
        ("list", Value::Array(vec![s("one"), Value::Number(2.0)])),
        ("map", object(&[("a", s("x")), ("b", s("Y"))])),
    ]));
    let check = |text: &str| eval_in(text, &context).unwrap().to_bool();
    assert!(check("containsValue(parameters.list, 'ONE')"));
    assert!(check("containsValue(parameters.list, 2)"));
    assert!(!check("containsValue(parameters.list, 3)"));
    assert!(check("containsValue(parameters.map, 'y')"));
    assert!(!check("containsValue(parameters.map, 'z')"));
    assert!(!check("containsValue('one', 'one')"));
}

#[test]
fn coalesce_skips_null_and_empty_strings() {
    assert_eq!(
        eval("coalesce(variables.nosuch, '', 'literal value')"),
        s("literal value")
    );
    assert_eq!(eval("coalesce('', variables.nosuch)"), Value::Null);
    assert_eq!(eval("coalesce(0, 'x')"), Value::Number(0.0));
}

#[test]
fn format_fills_placeholders_and_escapes_braces() {
    assert_eq!(eval("format('{0} Build', 'Windows')"), s("Windows Build"));
    assert_eq!(eval("format('{1}-{0}-{1}', 'a', 'b')"), s("b-a-b"));
    assert_eq!(eval("format('{{{0}}}', 1.50)"), s("{1.5}"));
    assert_eq!(
        eval("format('{0}|{1}|{2}', true, 1.2.3, variables.nosuch)"),
        s("True|1.2.3|")
    );
    assert_eq!(eval("format('no placeholders')"), s("no placeholders"));
    assert!(
        error("format('{1}', 'a')")
            .message
            .contains("refers to argument {1} but only 1 followed it")
    );
    for bad in [
        "format('{0', 'a')",
        "format('}', 'a')",
        "format('{x}', 'a')",
        "format('{0,5}', 'a')",
        "format('{}', 'a')",
    ] {
        assert!(
            error(bad).message.contains("is invalid"),
            "{bad}: {}",
            error(bad).message
        );
    }
    let e = error("format('{0}', split('a', ','))");
    assert_eq!(e.message, "format(): cannot convert an array to a string");
}

#[test]
fn format_evaluates_only_the_arguments_it_uses() {
    assert_eq!(eval("format('{0}', 'used', gt(1, 'x'))"), s("used"));
    assert!(matches!(
        error("format('{1}', 'used', gt(1, 'x'))").kind,
        ErrorKind::Cast { .. }
    ));
}

#[test]
fn format_applies_date_specifiers_to_date_times_only() {
    let mut context = MapContext::new();
    context.set(
        "pipeline",
        object(&[("startTime", s("2024-03-05 07:08:09.1234+02:00"))]),
    );
    let run = |text: &str| {
        parse(text, &ParseOptions::runtime())
            .unwrap()
            .evaluate(&context)
    };
    assert_eq!(
        run("format('{0:yyyyMMdd}', pipeline.startTime)").unwrap(),
        s("20240305")
    );
    assert_eq!(
        run("format('{0:yy M d H m s fff zzz}', pipeline.startTime)").unwrap(),
        s("24 3 5 7 8 9 123 +02:00")
    );
    assert_eq!(
        run("format('{0:yyyy\\-MM\\-dd HH\\:mm}', pipeline.startTime)").unwrap(),
        s("2024-03-05 07:08")
    );
    // The Azure engine accepts only its specifier set: separators must be escaped, names of days are not supported.
    assert!(
        run("format('{0:yyyy-MM-dd}', pipeline.startTime)")
            .unwrap_err()
            .message
            .contains("not a valid date-time format")
    );
    assert!(run("format('{0:dddd}', pipeline.startTime)").is_err());
    let e = run("format('{0:yyyy}', 'plain')").unwrap_err();
    assert_eq!(
        e.message,
        "format(): the specifiers 'yyyy' apply only to a date-time, not to string 'plain'"
    );
}

#[test]
fn join_split_replace() {
    let context = with_parameters(object(&[(
        "myArray",
        Value::Array(vec![s("FOO"), s("BAR"), Value::Number(3.0), object(&[])]),
    )]));
    assert_eq!(
        eval_in("join(';', parameters.myArray)", &context).unwrap(),
        s("FOO;BAR;3;")
    );
    assert_eq!(eval("join(',', 'single')"), s("single"));
    assert_eq!(
        eval("split('a,b,,c,', ',')"),
        Value::Array(vec![s("a"), s("b"), s(""), s("c"), s("")])
    );
    assert_eq!(
        eval("split('a;b,c', ';,')"),
        Value::Array(vec![s("a"), s("b"), s("c")])
    );
    assert_eq!(
        eval(
            "replace('https://www.tinfoilsecurity.com/saml/consume','https://www.tinfoilsecurity.com','http://server')"
        ),
        s("http://server/saml/consume")
    );
    assert_eq!(eval("replace('aAa', 'a', 'b')"), s("bAb"));
    assert_eq!(eval("replace('abc', '', 'x')"), s("abc"));
}

#[test]
fn lower_upper_trim_length() {
    assert_eq!(eval("lower('FOO Bar')"), s("foo bar"));
    assert_eq!(eval("upper('bah')"), s("BAH"));
    assert_eq!(eval("trim('  variable  ')"), s("variable"));
    assert_eq!(eval("length('fabrikam')"), Value::Number(8.0));
    assert_eq!(eval("length(split('a b c', ' '))"), Value::Number(3.0));
    assert_eq!(eval("length(variables.nosuch)"), Value::Number(0.0));
    let context = with_parameters(object(&[(
        "data",
        object(&[("one", Value::Number(1.0)), ("two", Value::Number(2.0))]),
    )]));
    assert_eq!(
        eval_in("length(parameters.data)", &context).unwrap(),
        Value::Number(2.0)
    );
    assert!(
        error("length(5)")
            .message
            .contains("length() expects a string, an array or an object")
    );
}

#[test]
fn iif_returns_one_branch_but_checks_both() {
    assert_eq!(eval("iif(eq(1, 1), 'yes', 'no')"), s("yes"));
    assert_eq!(eval("iif('', 'yes', 'no')"), s("no"));
    let context = with_parameters(object(&[("declared", s("d"))]));
    assert_eq!(
        eval_in("iif(true, parameters.declared, 'x')", &context).unwrap(),
        s("d")
    );
    let e = eval_in("iif(true, 'x', parameters.undeclared)", &context).unwrap_err();
    assert!(e.message.contains("'undeclared'"), "{}", e.message);
}

#[test]
fn convert_to_json_indents_by_two_spaces_in_key_order() {
    let context = with_parameters(object(&[(
        "listOfValues",
        object(&[(
            "this_is",
            object(&[
                ("a_complex", s("object")),
                ("with", Value::Array(vec![s("one"), s("two")])),
            ]),
        )]),
    )]));
    assert_eq!(
        eval_in("convertToJson(parameters.listOfValues)", &context).unwrap(),
        s(
            "{\n  \"this_is\": {\n    \"a_complex\": \"object\",\n    \"with\": [\n      \"one\",\n      \"two\"\n    ]\n  }\n}"
        )
    );
    assert_eq!(eval("convertToJson('a\"b')"), s("\"a\\\"b\""));
    assert_eq!(eval("convertToJson(1.2.3)"), s("\"1.2.3\""));
    assert_eq!(eval("convertToJson(variables.nosuch)"), s("null"));
}

#[test]
fn counter_starts_at_the_seed_and_counts_per_prefix() {
    let expression = parse("counter(variables['major'], 100)", &ParseOptions::runtime()).unwrap();
    let mut counters = lockgate_expr::Counters::new();
    let mut seen = Vec::new();
    for major in ["1", "1", "2", "2", "1"] {
        let mut context = MapContext::new();
        context.set_variable("major", major).set_counters(counters);
        seen.push(expression.evaluate(&context).unwrap());
        counters = context.into_counters();
    }
    let numbers: Vec<f64> = seen.iter().filter_map(|v| v.convert_to_number()).collect();
    assert_eq!(numbers, [100.0, 101.0, 100.0, 101.0, 102.0]);
    // counter is only available where runtime variables are defined.
    assert!(parse("counter('a', 1)", &ParseOptions::condition()).is_err());
}

#[test]
fn extra_functions_are_declared_and_supplied_by_the_caller() {
    let options = ParseOptions::condition().with_function("double", 1, 1);
    let mut context = MapContext::new();
    context.set_function("double", |args| {
        let n = args[0].convert_to_number().ok_or("not a number")?;
        Ok(Value::Number(n * 2.0))
    });
    let value = parse("double(21)", &options)
        .unwrap()
        .evaluate(&context)
        .unwrap();
    assert_eq!(value, Value::Number(42.0));
    let e = parse("double(1, 2)", &options).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnexpectedSymbol);
    assert_eq!(e.span.text("double(1, 2)"), ",");
    let e = parse("double()", &options).unwrap_err();
    assert_eq!(e.span.text("double()"), ")");
}

#[test]
fn property_and_index_access_on_objects_and_arrays() {
    let value = object(&[
        ("subObj", object(&[("nestedProp2", s("two"))])),
        ("array", Value::Array(vec![s("zero"), s("one")])),
    ]);
    let mut context = MapContext::new();
    context.set("thing", value);
    let options = ParseOptions::condition().with_named_value("thing");
    let run = |text: &str| parse(text, &options).unwrap().evaluate(&context).unwrap();
    assert_eq!(run("thing['subObj'].nestedProp2"), s("two"));
    assert_eq!(run("thing.SUBOBJ['NESTEDPROP2']"), s("two"));
    assert_eq!(run("thing.array[1]"), s("one"));
    assert_eq!(run("thing.array['1']"), s("one"));
    assert_eq!(run("thing.array[1.5]"), s("one"));
    assert_eq!(run("thing.array[true]"), s("one"));
    assert_eq!(run("thing.array[false]"), s("zero"));
    assert_eq!(run("thing.array['']"), s("zero"));
    assert_eq!(run("thing.array['x']"), Value::Null);
    assert_eq!(run("thing.array[-1]"), Value::Null);
    assert_eq!(run("thing.array[5]"), Value::Null);
    assert_eq!(run("thing.nosuch.deeper"), Value::Null);
}

#[test]
fn filtered_arrays_apply_the_rest_of_the_path_to_every_item() {
    let item = |id: f64| {
        object(&[
            ("id", Value::Number(id)),
            ("tags", Value::Array(vec![s("t")])),
        ])
    };
    let mut context = MapContext::new();
    context.set(
        "foo",
        Value::Array(vec![
            item(1.0),
            item(2.0),
            object(&[("other", Value::Null)]),
            item(3.0),
        ]),
    );
    let options = ParseOptions::condition().with_named_value("foo");
    let run = |text: &str| parse(text, &options).unwrap().evaluate(&context).unwrap();
    let numbers = |v: &[f64]| Value::Array(v.iter().map(|n| Value::Number(*n)).collect());
    assert_eq!(run("foo.*.id"), numbers(&[1.0, 2.0, 3.0]));
    assert_eq!(run("foo[*].id"), numbers(&[1.0, 2.0, 3.0]));
    assert_eq!(
        run("foo.*.tags.*"),
        Value::Array(vec![s("t"), s("t"), s("t")])
    );
    assert_eq!(run("length(foo.*.nosuch)"), Value::Number(0.0));
    assert_eq!(run("foo.*.other"), Value::Array(vec![Value::Null]));
}

#[test]
fn undeclared_parameters_are_errors_in_the_map_context() {
    let context = with_parameters(object(&[("no", Value::Number(0.0))]));
    let e = eval_in("parameters[format('{0}', 'test6')]", &context).unwrap_err();
    assert!(e.message.contains("'test6'"), "{}", e.message);
    assert_eq!(e.kind, ErrorKind::Evaluation);
}
