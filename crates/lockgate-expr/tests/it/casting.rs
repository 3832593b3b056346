//! Casting rules and the comparison functions (`eq`, `ne`, `gt`, `ge`, `lt`, `le`, `in`, `notIn`), as the Azure
//! Pipelines "Expressions" page describes type casting.

use lockgate_expr::{
    ErrorKind, Object, Value, ValueKind, Version, format_number, parse_number_string,
};

use crate::{error, eval, truthy};

#[test]
fn truthiness_of_every_type() {
    assert!(!Value::Null.to_bool());
    assert!(!truthy("false"));
    assert!(truthy("TRUE"));
    assert!(!truthy("0"));
    assert!(!truthy("-0.0"));
    assert!(truthy("-.5"));
    assert!(!truthy("''"));
    assert!(truthy("'false'"));
    assert!(truthy("'0'"));
    assert!(truthy("' '"));
    assert!(truthy("0.0.0"));
    assert!(Value::Array(vec![]).to_bool());
    assert!(Value::Object(Object::new()).to_bool());
}

#[test]
fn strings_to_numbers_use_invariant_rules() {
    assert_eq!(parse_number_string(""), Some(0.0));
    assert_eq!(parse_number_string(" +123,456.7890 "), Some(123456.789));
    assert_eq!(parse_number_string("-1,000"), Some(-1000.0));
    assert_eq!(parse_number_string(".5"), Some(0.5));
    assert_eq!(parse_number_string("1."), Some(1.0));
    assert_eq!(parse_number_string(" "), None);
    assert_eq!(parse_number_string("1e3"), None);
    assert_eq!(parse_number_string(",1"), None);
    assert_eq!(parse_number_string("abc"), None);
    assert_eq!(parse_number_string("0x10"), None);
}

#[test]
fn numbers_format_with_at_most_seven_decimals() {
    assert_eq!(format_number(123456.0), "123456");
    assert_eq!(format_number(-0.5), "-0.5");
    assert_eq!(format_number(-0.0), "0");
    assert_eq!(format_number(1.0 / 3.0), "0.3333333");
    assert_eq!(format_number(1e20), "100000000000000000000");
    assert_eq!(format_number(0.00000001), "0");
}

#[test]
fn booleans_versions_and_null_to_strings() {
    assert_eq!(Value::Boolean(true).to_display_string(), "True");
    assert_eq!(Value::Boolean(false).to_display_string(), "False");
    assert_eq!(Value::Null.to_display_string(), "");
    assert_eq!(
        Value::Version(Version::parse("1.2.3.4").unwrap()).to_display_string(),
        "1.2.3.4"
    );
    assert_eq!(Value::Array(vec![]).convert_to_string(), None);
}

#[test]
fn versions_parse_like_dotnet() {
    assert_eq!(
        Version::parse(" 1.2.0 ").map(|v| v.to_string()),
        Some("1.2.0".into())
    );
    assert!(Version::parse("1").is_none());
    assert!(Version::parse("1.2.3.4.5").is_none());
    assert!(Version::parse("1.-2").is_none());
    assert!(Version::parse("2147483648.1").is_none());
    assert!(Version::parse("1.2").unwrap() < Version::parse("1.2.0").unwrap());
    assert_ne!(
        Version::parse("1.2.3").unwrap(),
        Version::parse("1.2.3.0").unwrap()
    );
}

#[test]
fn number_to_version_goes_through_the_string_form() {
    assert_eq!(
        Value::Number(1.2).convert_to_version(),
        Version::parse("1.2")
    );
    assert_eq!(Value::Number(1.0).convert_to_version(), None);
    assert_eq!(Value::Number(2147483648.1).convert_to_version(), None);
    assert_eq!(Value::Boolean(true).convert_to_version(), None);
}

#[test]
fn eq_converts_the_right_side_to_the_left_type() {
    assert!(truthy("eq(1, true)"));
    assert!(truthy("eq(0, '')"));
    assert!(truthy("eq('TRue', true)"));
    assert!(truthy("eq(true, 'a')"));
    assert!(truthy("eq(123000, ' 123,000.000 ')"));
    assert!(!truthy("eq('123456.000', 123456.000)"));
    assert!(truthy("eq('0.5', .5)"));
    assert!(truthy("eq(1.2.0, ' 1.2.0 ')"));
    assert!(!truthy("eq(1.2.0, 1.2)"));
    assert!(!truthy("eq(1.2, 1.2.0.0)"));
    assert!(!truthy("eq(1, 'not a number')"));
    assert!(truthy("eq('insensITIVE', 'INSENSitive')"));
}

#[test]
fn ne_is_the_negation_of_eq_including_failed_conversions() {
    assert!(truthy("ne(1, 'not a number')"));
    assert!(truthy("ne(1.2.3, false)"));
    assert!(!truthy("ne('abcDEF', 'ABCdef')"));
    assert!(!truthy("ne(0, false)"));
}

#[test]
fn missing_values_are_null_and_equal_the_empty_string() {
    assert!(truthy("eq(variables.nosuch, '')"));
    assert!(!truthy("eq(variables.nosuch, 0)"));
    assert!(truthy("eq(0, variables.nosuch)"));
}

#[test]
fn ordering_functions_by_type() {
    assert!(truthy("gt(true, false)"));
    assert!(truthy("lt(False, True)"));
    assert!(truthy("gt('def', 'ABC')"));
    assert!(truthy("le('ABC', 'def')"));
    assert!(truthy("ge(4.5.6, 1.2.3)"));
    assert!(truthy("gt(1.2.0, 1.1)"));
    assert!(truthy("gt('123456.789', 123456.78)"));
    assert!(truthy("gt(true, '')"));
    assert!(!truthy("gt(true, ' ')"));
    assert!(truthy("ge(5, 5)"));
    assert!(!truthy("lt(1, 1)"));
    assert!(truthy("le(2, 2)"));
}

#[test]
fn ordering_with_a_failed_conversion_is_a_cast_error() {
    let e = error("gt(1, 'not a number')");
    assert_eq!(
        e.kind,
        ErrorKind::Cast {
            from: ValueKind::String,
            to: ValueKind::Number,
            value: Value::String("not a number".into())
        }
    );
    assert_eq!(
        e.message,
        "cannot compare number 1 with string 'not a number': the string does not convert to a number"
    );
    let e = error("lt(1.2, 1.2.0.0)");
    assert!(
        matches!(
            e.kind,
            ErrorKind::Cast {
                from: ValueKind::Version,
                to: ValueKind::Number,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.message
            .starts_with("cannot compare number 1.2 with version '1.2.0.0'"),
        "{}",
        e.message
    );
    let e = error("gt(1.2.0, 2147483648.1)");
    assert!(
        matches!(
            e.kind,
            ErrorKind::Cast {
                from: ValueKind::Number,
                to: ValueKind::Version,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.span.text("gt(1.2.0, 2147483648.1)"), "gt");
}

#[test]
fn null_on_the_left_of_an_ordering_counts_as_zero() {
    assert!(truthy("lt(variables.nosuch, 1)"));
    assert!(truthy("ge(variables.nosuch, '')"));
    assert!(matches!(
        error("gt(variables.nosuch, 'x')").kind,
        ErrorKind::Cast { .. }
    ));
}

#[test]
fn in_and_not_in_stop_at_the_first_match() {
    assert!(truthy("in(2, 1, 2, 3)"));
    assert!(!truthy("in(2, 1, 3, 4)"));
    assert!(truthy("in(1, true)"));
    assert!(!truthy("in(1, 'not a number')"));
    assert!(truthy("notIn('a', 'b', 'c')"));
    assert!(!truthy("notin(1.2.0, ' 1.2.0 ')"));
    // Later arguments are not evaluated once a match is found, so they cannot fail.
    assert!(truthy("in(1, 1, gt(1, 'x'))"));
    assert!(!truthy("notIn(1, 1, gt(1, 'x'))"));
}

#[test]
fn arrays_and_objects_do_not_convert_to_scalars() {
    let array = Value::Array(vec![Value::Number(1.0)]);
    assert_eq!(array.convert_to_number(), None);
    assert_eq!(array.convert_to_version(), None);
    assert!(array.to_bool());
    assert_eq!(eval("length(split('a,b', ','))"), Value::Number(2.0));
}
