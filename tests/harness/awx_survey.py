"""AWX's rules for survey specs and survey answers, re-implemented for the tests.

AWX (and Ansible Automation Platform's controller) is not installable here, so this module re-implements, from
AWX's documented behaviour (its API reference for ``survey_spec`` and its survey documentation), the checks the
controller makes when a survey spec is saved and when a job is launched with answers:

Spec (``POST .../survey_spec/``):
  * the spec is a mapping with ``name`` and ``description`` (strings) and ``spec``, a non-empty list;
  * every question is a mapping with ``question_name`` and ``variable`` (strings), ``type`` (one of
    ``QUESTION_TYPES``) and ``required`` (a boolean); ``question_description`` is a string when given;
  * ``variable`` is unique in the spec; this helper also requires a valid variable name (an identifier that is
    no Python keyword), since Ansible would not let a playbook read anything else as a plain variable;
  * ``min`` / ``max`` are integers (or null); for text, textarea and password they bound the answer's length,
    for integer and float its value, and there ``min`` is not above ``max``; choice questions ignore them (the
    controller's UI sends them for every type);
  * multiplechoice and multiselect need ``choices``: a list of strings or one string with a choice per line;
  * ``default`` has the type of the question (a string for text, textarea, password, multiplechoice and
    multiselect, an integer for integer, a number for float) and, beyond what the API checks on save, lies
    inside the question's bounds and among its choices (a multiselect default is one choice per line), because
    AWX silently drops a default that fails the answer checks below when it builds a job's extra vars.

Answers (a launch, or a workflow node's extra data):
  * a required question needs an answer, unless its default fills it in;
  * text, textarea and password answers are strings whose length is within ``min`` / ``max``;
  * integer answers are ``int`` (not ``bool``), float answers ``int`` or ``float``, within ``min`` / ``max``;
  * a multiplechoice answer is one of the choices; a multiselect answer is a list of choices.

``extra_vars(spec, answers)`` builds what AWX hands to ansible-playbook: each default that passes the answer
checks, overridden by the answers. Every error names the question, the field, the value and what was expected.
"""

from __future__ import annotations

import keyword
from typing import Any

QUESTION_TYPES = ("text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect")
TEXT_TYPES = ("text", "textarea", "password")
CHOICE_TYPES = ("multiplechoice", "multiselect")
REQUIRED_KEYS = (("question_name", str, "a string"), ("variable", str, "a string"), ("type", str, "a string"), ("required", bool, "a boolean"))


class SurveyError(ValueError):
    """A survey spec or a set of answers that AWX would refuse; ``errors`` lists every reason."""

    def __init__(self, errors: list):
        super().__init__("; ".join(errors))
        self.errors = list(errors)


def _where(index: int, question: Any) -> str:
    variable = question.get("variable") if isinstance(question, dict) else None
    return "question %d (%s)" % (index, variable if isinstance(variable, str) else "no variable")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choice_list(choices: Any) -> list:
    """A question's choices as a list: AWX accepts a list or one string with a choice per line."""
    if isinstance(choices, str):
        return [line for line in choices.splitlines() if line.strip()]
    return list(choices)


def _bound(question: dict, key: str) -> Any:
    value = question.get(key)
    return None if value in ("", None) else value


def answer_errors(question: dict, value: Any, where: str = "", what: str = "answer") -> list:
    """Why AWX would refuse ``value`` as the answer to ``question`` (an empty list when it accepts it);
    ``what`` names the value in the errors (``answer`` or ``default``)."""
    where = where or "question %s" % question.get("variable")
    qtype, variable = question["type"], question["variable"]
    low, high = _bound(question, "min"), _bound(question, "max")
    if qtype in TEXT_TYPES:
        if not isinstance(value, str):
            return ["%s: %s %r for %s: expected a string" % (where, what, value, variable)]
        if low is not None and len(value) < low:
            return ["%s: %s %r for %s is %d characters long: expected at least min=%d" % (where, what, value, variable, len(value), low)]
        if high is not None and len(value) > high:
            return ["%s: %s %r for %s is %d characters long: expected at most max=%d" % (where, what, value, variable, len(value), high)]
        return []
    if qtype in ("integer", "float"):
        ok = _is_int(value) if qtype == "integer" else _is_number(value)
        if not ok:
            return ["%s: %s %r for %s: expected %s" % (where, what, value, variable, "an integer" if qtype == "integer" else "a number")]
        if low is not None and value < low:
            return ["%s: %s %r for %s: expected at least min=%s" % (where, what, value, variable, low)]
        if high is not None and value > high:
            return ["%s: %s %r for %s: expected at most max=%s" % (where, what, value, variable, high)]
        return []
    choices = choice_list(question.get("choices", []))
    if qtype == "multiplechoice":
        if value not in choices:
            return ["%s: %s %r for %s: expected one of %s" % (where, what, value, variable, choices)]
        return []
    if not isinstance(value, list):
        return ["%s: %s %r for %s: expected a list of choices from %s" % (where, what, value, variable, choices)]
    return ["%s: %s %r for %s: expected each item among %s" % (where, what, item, variable, choices) for item in value if item not in choices]


def _default_errors(question: dict, where: str) -> list:
    qtype, default = question["type"], question["default"]
    if qtype == "integer" and not _is_int(default):
        return ["%s: default %r: expected an integer for type integer" % (where, default)]
    if qtype == "float" and not _is_number(default):
        return ["%s: default %r: expected a number for type float" % (where, default)]
    if qtype not in ("integer", "float") and not isinstance(default, str):
        return ["%s: default %r: expected a string for type %s" % (where, default, qtype)]
    if qtype == "multiselect":
        chosen = choice_list(default)
        return answer_errors(question, chosen, where, "default") if chosen else []
    if qtype == "multiplechoice" and default == "":
        return []
    return answer_errors(question, default, where, "default")


def _question_errors(index: int, question: Any, seen: set) -> list:
    if not isinstance(question, dict):
        return ["question %d: %r: expected a mapping" % (index, question)]
    where = _where(index, question)
    errors = []
    for key, kind, label in REQUIRED_KEYS:
        if key not in question:
            errors.append("%s: field %r is missing: expected %s" % (where, key, label))
        elif not isinstance(question[key], kind):
            errors.append("%s: field %r is %r: expected %s" % (where, key, question[key], label))
    if "question_description" in question and not isinstance(question["question_description"], str):
        errors.append("%s: field 'question_description' is %r: expected a string" % (where, question["question_description"]))
    if errors:
        return errors
    variable = question["variable"]
    if not variable.isidentifier() or keyword.iskeyword(variable):
        errors.append("%s: variable %r: expected a valid variable name (letters, digits, _; not a digit first; no keyword)" % (where, variable))
    if variable in seen:
        errors.append("%s: variable %r: expected unique variables, it is already used by an earlier question" % (where, variable))
    seen.add(variable)
    if question["type"] not in QUESTION_TYPES:
        errors.append("%s: type %r: expected one of %s" % (where, question["type"], ", ".join(QUESTION_TYPES)))
        return errors
    for key in ("min", "max"):
        if _bound(question, key) is not None and not _is_int(question[key]):
            errors.append("%s: %s %r: expected an integer" % (where, key, question[key]))
    if errors:
        return errors
    low, high = _bound(question, "min"), _bound(question, "max")
    if question["type"] not in CHOICE_TYPES and low is not None and high is not None and low > high:
        errors.append("%s: min %r is above max %r: expected min <= max" % (where, low, high))
    if question["type"] in CHOICE_TYPES:
        choices = question.get("choices")
        if choices is None:
            errors.append("%s: field 'choices' is missing: expected a list or a newline-separated string for type %s" % (where, question["type"]))
        elif not isinstance(choices, (list, str)) or not all(isinstance(c, str) for c in choice_list(choices)):
            errors.append("%s: choices %r: expected a list of strings or a newline-separated string" % (where, choices))
        elif not choice_list(choices):
            errors.append("%s: choices %r: expected at least one choice" % (where, choices))
        elif len(set(choice_list(choices))) != len(choice_list(choices)):
            errors.append("%s: choices %r: expected each choice once" % (where, choices))
    if not errors and question.get("default") is not None:
        errors += _default_errors(question, where)
    return errors


def spec_errors(spec: Any) -> list:
    """Every reason AWX would refuse to save ``spec`` as a survey (an empty list when it would save it)."""
    if not isinstance(spec, dict):
        return ["survey spec %r: expected a mapping with name, description and spec" % (spec,)]
    errors = []
    for key, kind, label in (("name", str, "a string"), ("description", str, "a string"), ("spec", list, "a list of questions")):
        if key not in spec:
            errors.append("survey spec: field %r is missing: expected %s" % (key, label))
        elif not isinstance(spec[key], kind):
            errors.append("survey spec: field %r is %r: expected %s" % (key, spec[key], label))
    if errors:
        return errors
    if not spec["spec"]:
        return ["survey spec: field 'spec' is empty: expected at least one question"]
    seen: set = set()
    for index, question in enumerate(spec["spec"]):
        errors += _question_errors(index, question, seen)
    return errors


def validate_spec(spec: Any) -> None:
    """Raise SurveyError when AWX would refuse ``spec``."""
    errors = spec_errors(spec)
    if errors:
        raise SurveyError(errors)


def answers_errors(spec: dict, answers: dict) -> list:
    """Every reason AWX would refuse to launch with ``answers`` (defaults fill unanswered questions)."""
    validate_spec(spec)
    values = extra_vars(spec, answers, validate=False)
    errors = []
    for index, question in enumerate(spec["spec"]):
        where = _where(index, question)
        variable = question["variable"]
        if variable not in values:
            if question["required"]:
                errors.append("%s: no answer and no usable default for required variable %r" % (where, variable))
            continue
        errors += answer_errors(question, values[variable], where)
    return errors


def extra_vars(spec: dict, answers: dict, validate: bool = True) -> dict:
    """The extra vars AWX passes to the playbook: defaults that pass the answer checks, then the answers.

    With ``validate`` (the default) a spec or answers AWX would refuse raise SurveyError."""
    if validate:
        errors = answers_errors(spec, answers)
        if errors:
            raise SurveyError(errors)
    out = {}
    for question in spec["spec"]:
        default = question.get("default")
        if default is None:
            continue
        if question["type"] == "multiselect":
            default = choice_list(default) if isinstance(default, str) else default
            if not default:
                continue
        if not answer_errors(question, default):
            out[question["variable"]] = default
    out.update(answers)
    return out
