"""tests/harness/awx_survey.py: each of AWX's survey rules (re-implemented there) accepts what AWX accepts and
refuses what it refuses, with an error that names the question, the field, the value and what was expected."""

import copy

import pytest
from harness import awx_survey

GOOD = {
    "name": "deploy",
    "description": "a survey with one question of each type",
    "spec": [
        {"question_name": "Target", "variable": "target", "type": "text", "required": True, "default": "all", "min": 1, "max": 20},
        {"question_name": "Notes", "variable": "notes", "type": "textarea", "required": False},
        {"question_name": "Secret", "variable": "secret", "type": "password", "required": False, "max": 8},
        {"question_name": "Percent", "variable": "percent", "type": "integer", "required": True, "default": 0, "min": 0, "max": 100},
        {"question_name": "Ratio", "variable": "ratio", "type": "float", "required": False, "default": 0.5, "min": 0, "max": 1},
        {"question_name": "Mode", "variable": "mode", "type": "multiplechoice", "required": True, "choices": "fast\nsafe\n", "default": "safe"},
        {"question_name": "Names", "variable": "names", "type": "multiselect", "required": False, "choices": ["filter", "lb"], "default": "filter\nlb"},
    ],
}


def spec_with(index=None, drop=(), **changes):
    spec = copy.deepcopy(GOOD)
    if index is None:
        spec.update(changes)
        for key in drop:
            del spec[key]
        return spec
    spec["spec"][index].update(changes)
    for key in drop:
        del spec["spec"][index][key]
    return spec


def the_error(spec):
    errors = awx_survey.spec_errors(spec)
    assert len(errors) == 1, errors
    return errors[0]


def test_a_spec_with_every_question_type_and_defaults_inside_their_bounds_is_accepted():
    assert awx_survey.spec_errors(GOOD) == []
    awx_survey.validate_spec(GOOD)


@pytest.mark.parametrize("field", ["name", "description", "spec"])
def test_a_spec_without_name_description_or_questions_is_refused(field):
    assert the_error(spec_with(drop=[field])) == "survey spec: field %r is missing: expected %s" % (
        field,
        "a list of questions" if field == "spec" else "a string",
    )


def test_an_empty_question_list_and_a_spec_that_is_no_mapping_are_refused():
    assert "field 'spec' is empty: expected at least one question" in the_error(spec_with(spec=[]))
    assert "expected a mapping" in the_error(["not", "a", "spec"])
    assert "field 'spec' is 'x': expected a list of questions" in the_error(spec_with(spec="x"))


@pytest.mark.parametrize("field,expected", [("question_name", "a string"), ("variable", "a string"), ("type", "a string"), ("required", "a boolean")])
def test_a_question_without_a_required_field_is_refused(field, expected):
    error = the_error(spec_with(0, drop=[field]))
    assert error.startswith("question 0 (")
    assert "field %r is missing: expected %s" % (field, expected) in error


def test_required_must_be_a_boolean_not_a_string():
    assert the_error(spec_with(0, required="yes")) == "question 0 (target): field 'required' is 'yes': expected a boolean"


@pytest.mark.parametrize("variable", ["1st", "wave-size", "with space", "class", ""])
def test_a_variable_that_is_no_valid_name_is_refused(variable):
    error = the_error(spec_with(0, variable=variable))
    assert "variable %r: expected a valid variable name" % variable in error


def test_a_variable_used_twice_is_refused_at_its_second_question():
    assert the_error(spec_with(1, variable="target")) == (
        "question 1 (target): variable 'target': expected unique variables, it is already used by an earlier question"
    )


def test_a_type_outside_awx_set_is_refused_naming_the_allowed_ones():
    error = the_error(spec_with(0, type="string"))
    assert error.startswith("question 0 (target): type 'string': expected one of text, textarea, password, integer,")


@pytest.mark.parametrize("key,value", [("min", "1"), ("max", 2.5)])
def test_min_and_max_must_be_integers(key, value):
    assert the_error(spec_with(3, **{key: value})) == "question 3 (percent): %s %r: expected an integer" % (key, value)


def test_min_above_max_is_refused():
    assert the_error(spec_with(3, min=10, max=5, default=7)) == "question 3 (percent): min 10 is above max 5: expected min <= max"


def test_min_and_max_of_a_choice_question_are_ignored_as_awx_ignores_them():
    assert awx_survey.spec_errors(spec_with(5, min=5, max=0)) == []


def test_empty_min_and_max_mean_no_bound():
    assert awx_survey.spec_errors(spec_with(3, min="", max=None, default=100000)) == []


@pytest.mark.parametrize(
    "index,default,expected",
    [
        (0, "", "default '' for target is 0 characters long: expected at least min=1"),
        (0, "x" * 21, "characters long: expected at most max=20"),
        (3, 101, "default 101 for percent: expected at most max=100"),
        (3, -1, "default -1 for percent: expected at least min=0"),
        (4, 1.5, "default 1.5 for ratio: expected at most max=1"),
        (5, "fastest", "default 'fastest' for mode: expected one of ['fast', 'safe']"),
        (6, "filter\nmaglev", "default 'maglev' for names: expected each item among ['filter', 'lb']"),
    ],
)
def test_a_default_outside_its_bounds_or_choices_is_refused(index, default, expected):
    assert expected in the_error(spec_with(index, default=default))


@pytest.mark.parametrize(
    "index,default,expected",
    [
        (0, 3, "default 3: expected a string for type text"),
        (3, "0", "default '0': expected an integer for type integer"),
        (3, True, "default True: expected an integer for type integer"),
        (4, "0.5", "default '0.5': expected a number for type float"),
        (6, ["filter"], "default ['filter']: expected a string for type multiselect"),
    ],
)
def test_a_default_of_the_wrong_type_is_refused(index, default, expected):
    assert expected in the_error(spec_with(index, default=default))


def test_choice_questions_need_choices_as_a_list_or_a_newline_string():
    assert "field 'choices' is missing: expected a list or a newline-separated string for type multiplechoice" in the_error(
        spec_with(5, drop=["choices", "default"])
    )
    assert "choices '\\n': expected at least one choice" in the_error(spec_with(5, choices="\n", drop=["default"]))
    assert "choices {'a': 1}: expected a list of strings" in the_error(spec_with(5, choices={"a": 1}, drop=["default"]))
    assert "expected each choice once" in the_error(spec_with(6, choices=["lb", "lb"], default="lb"))
    assert awx_survey.choice_list("fast\n\nsafe\n") == ["fast", "safe"]


def test_an_empty_multiplechoice_default_is_accepted_and_left_out_of_the_extra_vars():
    spec = spec_with(5, default="", required=False)
    assert awx_survey.spec_errors(spec) == []
    assert "mode" not in awx_survey.extra_vars(spec, {})


def test_defaults_fill_the_extra_vars_and_answers_override_them():
    assert awx_survey.extra_vars(GOOD, {"percent": 25}) == {"target": "all", "percent": 25, "ratio": 0.5, "mode": "safe", "names": ["filter", "lb"]}


def test_a_required_question_without_answer_or_default_refuses_the_launch():
    spec = spec_with(0, drop=["default"])
    assert awx_survey.answers_errors(spec, {}) == ["question 0 (target): no answer and no usable default for required variable 'target'"]
    with pytest.raises(awx_survey.SurveyError, match="required variable 'target'"):
        awx_survey.extra_vars(spec, {})


@pytest.mark.parametrize(
    "answers,expected",
    [
        ({"target": 5}, "answer 5 for target: expected a string"),
        ({"target": "x" * 21}, "is 21 characters long: expected at most max=20"),
        ({"secret": "123456789"}, "is 9 characters long: expected at most max=8"),
        ({"percent": "25"}, "answer '25' for percent: expected an integer"),
        ({"percent": True}, "answer True for percent: expected an integer"),
        ({"percent": 101}, "answer 101 for percent: expected at most max=100"),
        ({"ratio": "0.1"}, "answer '0.1' for ratio: expected a number"),
        ({"ratio": -0.1}, "answer -0.1 for ratio: expected at least min=0"),
        ({"mode": "slow"}, "answer 'slow' for mode: expected one of ['fast', 'safe']"),
        ({"names": "filter"}, "answer 'filter' for names: expected a list of choices from ['filter', 'lb']"),
        ({"names": ["filter", "dns"]}, "answer 'dns' for names: expected each item among ['filter', 'lb']"),
    ],
)
def test_answers_are_checked_like_awx_checks_them_at_launch(answers, expected):
    errors = awx_survey.answers_errors(GOOD, answers)
    assert len(errors) == 1 and expected in errors[0], errors
    with pytest.raises(awx_survey.SurveyError):
        awx_survey.extra_vars(GOOD, answers)


def test_answers_inside_every_bound_launch():
    answers = {"target": "edges", "notes": "", "secret": "s3cret", "percent": 100, "ratio": 1, "mode": "fast", "names": []}
    assert awx_survey.answers_errors(GOOD, answers) == []
    assert awx_survey.extra_vars(GOOD, answers)["names"] == []


def test_answers_are_not_checked_against_a_spec_awx_would_refuse():
    with pytest.raises(awx_survey.SurveyError, match="expected a valid variable name"):
        awx_survey.answers_errors(spec_with(0, variable="1st"), {})
