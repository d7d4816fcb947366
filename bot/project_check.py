"""`parley check`: does this Rasa project have everything Parley's handoff needs?

One line per problem, naming the file and what to add (`parley init` adds all
of it). The list comes from `bot/contract.py`, the same declaration the gate,
the desk and the actions take their names from.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.bot import contract
from parley.bot.action_server import TOKEN_ENV, TOKEN_HEADER
from parley.bot.project import Project, component_names
from parley.bot.settings import PROJECT_FILE, Settings, load_settings

MIN_EXAMPLES = 5  # FallbackClassifier needs the intent learned, not merely declared
NLU_FILE = "data/parley_nlu.yml"  # where `parley init` puts what it adds
RULES_FILE = "data/parley_rules.yml"


@dataclass(frozen=True)
class Problem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def check(settings: Settings | None = None) -> list[Problem]:
    project = Project(settings or load_settings())
    problems: list[Problem] = []
    add = problems.append
    if not project.settings.settings_file.is_file():
        add(Problem(PROJECT_FILE, "missing: run `parley init` to create it with the defaults"))

    domain_file = project.rel(project.domain_target())
    domain = project.domain()
    for intent in contract.INTENTS:
        if intent not in domain["intents"]:
            add(Problem(domain_file, f"add intent `{intent}` under `intents:`"))
        examples = project.intent_examples(intent)
        if examples < MIN_EXAMPLES:
            add(Problem(NLU_FILE, f"intent `{intent}` has {examples} example(s); give it at "
                                  f"least {MIN_EXAMPLES} (in any data file with `nlu:`)"))
    for slot in contract.SLOTS:
        if slot not in domain["slots"]:
            add(Problem(domain_file, f"add slot `{slot}` under `slots:` (type categorical, "
                                     "values keyword/intent/low_confidence/complaint, "
                                     "mappings: [{type: custom}], influence_conversation: "
                                     "false)"))
    for action in contract.ACTIONS:
        if action not in domain["actions"]:
            add(Problem(domain_file, f"add action `{action}` under `actions:`"))
    for rule in contract.RULES:
        for conflict in project.conflicts(rule):
            add(Problem(conflict.split(": ", 1)[0], f"{conflict.split(': ', 1)[1]}; Parley "
                        f"answers it with {rule.action}: change that step to `action: "
                        f"{rule.action}` (Rasa will not train with both)"))
        if not project.has_rule(rule):
            add(Problem(RULES_FILE, f"add a rule: intent `{rule.intent}` then action "
                                    f"`{rule.action}` ({rule.title})"))

    replies_file = project.rel(project.settings.replies_file)
    replies = project.replies()
    for reply in contract.REPLIES:
        if reply.name not in replies:
            add(Problem(replies_file, f"add reply `{reply.name}` (sent when {reply.when})"))

    problems += _config(project) + _endpoints(project) + _credentials(project)
    if not project.registers_actions():
        add(Problem(project.rel(project.actions_entry()),
                    f"add `import {contract.ACTIONS_MODULE}  # noqa: F401` so the action "
                    "server registers action_handoff and action_fallback"))
    return problems


def _config(project: Project) -> list[Problem]:
    config = project.config()
    if config.data is None:
        return [Problem("config.yml", "missing: a Rasa project needs one (`rasa init`)")]
    pipeline = (config.data or {}).get("pipeline")
    if not pipeline:
        return [Problem("config.yml", "`pipeline:` is empty, so Rasa picks one when training; "
                                      "list it (`parley init` writes Rasa's default) so "
                                      f"{contract.FALLBACK_CLASSIFIER} and "
                                      f"{contract.KEYWORD_COMPONENT} can follow")]
    names = component_names(pipeline)
    problems = []
    if contract.FALLBACK_CLASSIFIER not in names:
        problems.append(Problem("config.yml", f"add `- name: {contract.FALLBACK_CLASSIFIER}` "
                                              "to the pipeline after the intent classifier"))
    if contract.KEYWORD_COMPONENT not in names:
        problems.append(Problem("config.yml", f"add `- name: {contract.KEYWORD_COMPONENT}` "
                                              "as the last pipeline entry"))
    elif contract.FALLBACK_CLASSIFIER in names and names.index(
            contract.KEYWORD_COMPONENT) < names.index(contract.FALLBACK_CLASSIFIER):
        problems.append(Problem("config.yml", f"move {contract.KEYWORD_COMPONENT} after "
                                              f"{contract.FALLBACK_CLASSIFIER}, so no "
                                              "fallback can out-vote the AGENT keyword"))
    policies = (config.data or {}).get("policies")
    if policies and "RulePolicy" not in component_names(policies):
        problems.append(Problem("config.yml", "add `- name: RulePolicy` to the policies: "
                                              "Parley's handoff and fallback are rules"))
    return problems


def _endpoints(project: Project) -> list[Problem]:
    data = project.endpoints().data or {}
    problems = []
    nlg = data.get("nlg") or {}
    if nlg.get("type") != contract.NLG_CLASS:
        problems.append(Problem("endpoints.yml", f"set `nlg: {{type: {contract.NLG_CLASS}}}` "
                                                 "so replies come from the live library"))
    if "file" in nlg:
        problems.append(Problem("endpoints.yml", "remove `file:` under `nlg:`; the reply file "
                                                 "is `replies:` in parley.yml"))
    if not (data.get("action_endpoint") or {}).get("url"):
        problems.append(Problem("endpoints.yml", "add `action_endpoint: {url: "
                                                 "http://localhost:5055/webhook}`"))
    headers = (data.get("action_endpoint") or {}).get("headers") or {}
    # Present is enough: once Rasa is imported its YAML loader expands `${...}` in
    # every file read, ours included, so the value may already be the secret.
    if not headers.get(TOKEN_HEADER):
        problems.append(Problem("endpoints.yml", f"add `headers: {{{TOKEN_HEADER}: "
                                                 f"${{{TOKEN_ENV}}}}}` (unquoted) under "
                                                 "`action_endpoint:`: the action server "
                                                 "refuses calls without it"))
    return problems


def _credentials(project: Project) -> list[Problem]:
    data = project.credentials().data or {}
    problems = [Problem("credentials.yml", f"remove `{key}:`: Rasa's own channel reaches the "
                                           "bot around Parley's inbox and ownership gate "
                                           "(use parley.connectors.script.ScriptInput "
                                           "for scripts)")
                for key in data if str(key) in contract.BYPASSING_CHANNELS]
    if not any(str(key).startswith("parley.connectors.") for key in data):
        problems.append(Problem("credentials.yml", f"add `{contract.WEBCHAT_CHANNEL}:` (or a "
                                                   "platform's connector): only Parley's "
                                                   "channels pass the ownership gate"))
    return problems
