"""What a Rasa project must contain for Parley's handoff, declared once.

`parley init` adds what is missing, `parley check` reports what is missing, and
the gate, the desk and the framework's actions take their reply names from the
constants below, so a reply the code sends can never be missing at run time
without `parley check` (part of `make test`) saying so first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# -- replies the framework sends ------------------------------------------------
HANDOFF_QUEUED = "utter_handoff_queued"
HANDOFF_AFTER_HOURS = "utter_handoff_after_hours"
QUEUE_UPDATE = "utter_queue_update"
QUEUE_UPDATE_AFTER_HOURS = "utter_queue_update_after_hours"
BACK_TO_BOT = "utter_back_to_bot"
AGENT_JOINED = "utter_agent_joined"
HANDOFF_RESOLVED = "utter_handoff_resolved"
# The satisfaction survey (`parley.bot.survey`): one reply per question, then thanks.
SURVEY_ANSWER = "utter_survey_answer"
SURVEY_TIME = "utter_survey_time"
SURVEY_AGENT = "utter_survey_agent"
SURVEY_IMPROVE = "utter_survey_improve"
SURVEY_THANKS = "utter_survey_thanks"
SURVEY_SKIP = "skip"  # the payload of the free-text question's skip button
FOLLOW_UP = "utter_follow_up"
ASK_REPHRASE = "utter_ask_rephrase"
FALLBACK_HANDOFF = "utter_fallback_handoff"
# `utter_topic_<intent>`: the button title that offers <intent> after a first
# fallback. Intents without one are never offered ("Did you mean: hello?").
TOPIC_PREFIX = "utter_topic_"

HANDOFF_INTENT = "human_handoff"
# Optional: a project with a `complaint` intent gets high priority for angry or
# repeated complaints, and `affirm` right after an offer of a person hands off
# with reason "complaint" (the demo's rules do this).
COMPLAINT_INTENT = "complaint"
ACCEPT_INTENT = "affirm"
FALLBACK_INTENT = "nlu_fallback"  # FallbackClassifier's; Rasa knows it without a domain entry
HANDOFF_ACTION = "action_handoff"
FALLBACK_ACTION = "action_fallback"
REASON_SLOT = "handoff_reason"
# The first four are the bot's own (the slot's values); the others come from outside a turn:
# a person answering in the platform's inbox, or a message the bot failed to process.
REASONS = ("keyword", "intent", "low_confidence", "complaint", "external", "bot_error")

FALLBACK_CLASSIFIER = "FallbackClassifier"
KEYWORD_COMPONENT = "parley.bot.nlu.keywords.KeywordIntentOverride"
SENTENCE_CLASSIFIER = "parley.bot.nlu.classifier.SentenceIntentClassifier"
NLG_CLASS = "parley.bot.responses.nlg.LibraryNLG"
WEBCHAT_CHANNEL = "parley.connectors.webchat.WebChatInput"
ACTIONS_MODULE = "parley.bot.actions"


@dataclass(frozen=True)
class RequiredReply:
    name: str
    when: str  # when the framework sends it, for `parley check` and writers
    variations: tuple[dict[str, Any], ...]  # what `parley init` writes


def _text(en: str, pt: str, **extra: Any) -> tuple[dict[str, Any], ...]:
    return ({"text": en, **extra}, {"text": pt, **extra, "metadata": {"language": "pt"}})


def _scale(en: str, pt: str) -> tuple[dict[str, Any], ...]:
    """A 1-5 survey question: the score is the payload, so typing "4" is the same
    as pressing it; WhatsApp shows five options as a list."""
    return ({"text": en, "buttons": _SCALE_EN},
            {"text": pt, "buttons": _SCALE_PT, "metadata": {"language": "pt"}})


_SCALE_EN = [{"title": title, "payload": str(n)} for n, title in enumerate(
    ("😞 1 Very poor", "🙁 2 Poor", "😐 3 OK", "🙂 4 Good", "😀 5 Excellent"), 1)]
_SCALE_PT = [{"title": title, "payload": str(n)} for n, title in enumerate(
    ("😞 1 Muito mau", "🙁 2 Mau", "😐 3 Razoável", "🙂 4 Bom", "😀 5 Excelente"), 1)]

REPLIES: tuple[RequiredReply, ...] = (
    RequiredReply(HANDOFF_QUEUED, "a conversation joins the queue in support hours", _text(
        "Got it, I've asked a person from our team to join. You're number {queue_position} "
        "in the queue, estimated wait {eta}. They'll reply right here. Type BOT to go back "
        "to the bot.",
        "Combinado, pedi a uma pessoa da nossa equipa para entrar. É o número "
        "{queue_position} na fila, espera estimada {eta}. A resposta chega aqui. Escreva "
        "BOT para voltar ao assistente.")),
    RequiredReply(HANDOFF_AFTER_HOURS, "a conversation joins the queue outside support hours",
                  _text(
        "Our team is offline right now; a person will answer here {next_open}. You can also "
        "email {support_email}. Type BOT to go back to the bot.",
        "A nossa equipa está offline; uma pessoa responde aqui {next_open}. Também pode "
        "escrever para {support_email}. Escreva BOT para voltar ao assistente.")),
    RequiredReply(QUEUE_UPDATE, "the customer writes while waiting, in support hours", _text(
        "Thanks, they'll see that. You're number {queue_position} in the queue, estimated "
        "wait {eta}. Type BOT to go back to the bot.",
        "Obrigado, a equipa vai ver. É o número {queue_position} na fila, espera estimada "
        "{eta}. Escreva BOT para voltar ao assistente.")),
    RequiredReply(QUEUE_UPDATE_AFTER_HOURS, "the customer writes while waiting, after hours",
                  _text(
        "Thanks, they'll see that. Our team is offline; a person will answer {next_open}. "
        "Type BOT to go back to the bot.",
        "Obrigado, a equipa vai ver. Estamos offline; uma pessoa responde {next_open}. "
        "Escreva BOT para voltar ao assistente.")),
    RequiredReply(BACK_TO_BOT, "the customer typed BOT and left the queue", _text(
        "OK, you're back with the bot. How can I help? (Type AGENT any time for a person.)",
        "Está de volta ao assistente. Em que posso ajudar? (Escreva AGENT para falar com "
        "uma pessoa.)")),
    RequiredReply(AGENT_JOINED, "an agent claims the conversation in the desk", _text(
        "{agent_name} from our team has joined the chat.",
        "{agent_name}, da nossa equipa, entrou na conversa.")),
    RequiredReply(HANDOFF_RESOLVED, "the agent resolves and hands back to the bot", _text(
        "{agent_name} has handed you back to me, the bot. Ask me anything, or type AGENT for "
        "a person again.",
        "{agent_name} devolveu a conversa ao assistente. Pergunte o que quiser, ou escreva "
        "AGENT para voltar a falar com uma pessoa.")),
    RequiredReply(SURVEY_ANSWER, "survey: after a resolved conversation, if asked", _scale(
        "How happy are you with the answer you got? From 1 (very poor) to 5 (excellent).",
        "Qual a sua satisfação com a resposta que recebeu? De 1 (muito mau) a 5 "
        "(excelente).")),
    RequiredReply(SURVEY_TIME, "survey: the time it took, if asked", _scale(
        "How happy are you with the time it took? From 1 (very poor) to 5 (excellent).",
        "Qual a sua satisfação com o tempo que demorou? De 1 (muito mau) a 5 (excelente).")),
    RequiredReply(SURVEY_AGENT, "survey: the agent's help, when a person handled it", _scale(
        "How well did {agent_name} help you? From 1 (very poor) to 5 (excellent).",
        "Como avalia a ajuda de {agent_name}? De 1 (muito mau) a 5 (excelente).")),
    RequiredReply(SURVEY_IMPROVE, "survey: the optional free-text question", (
        {"text": "What should we improve? Write it in a message, or tap Skip.",
         "buttons": [{"title": "Skip", "payload": SURVEY_SKIP}]},
        {"text": "O que devemos melhorar? Escreva numa mensagem ou toque em Saltar.",
         "buttons": [{"title": "Saltar", "payload": SURVEY_SKIP}],
         "metadata": {"language": "pt"}})),
    RequiredReply(SURVEY_THANKS, "survey: the customer answered the last question", _text(
        "Thank you for your feedback! 🙏 It helps us get better.",
        "Obrigado pela sua opinião! 🙏 Ajuda-nos a melhorar.")),
    RequiredReply(FOLLOW_UP, "the customer went quiet after an agent's reply", _text(
        "Just checking in: is everything sorted? Reply here if you still need help.",
        "Está tudo resolvido? Responda aqui se ainda precisar de ajuda.")),
    RequiredReply(ASK_REPHRASE, "a first low-confidence message (topic buttons follow)", _text(
        "Sorry, I didn't quite get that. Could you say it another way? Or pick a topic "
        "below. Type AGENT to reach a person.",
        "Desculpe, não percebi. Pode dizer de outra forma? Ou escolha um tema abaixo. "
        "Escreva AGENT para falar com uma pessoa.")),
    RequiredReply(FALLBACK_HANDOFF, "a second low-confidence message in a row", _text(
        "I'm still not sure I understand, so I'm bringing in a person from our team.",
        "Continuo sem perceber, por isso vou chamar uma pessoa da nossa equipa.")),
)
REPLY_NAMES = frozenset(r.name for r in REPLIES)


@dataclass(frozen=True)
class Rule:
    title: str
    intent: str
    action: str


RULES = (
    Rule("Parley: a person when asked for", HANDOFF_INTENT, HANDOFF_ACTION),
    Rule("Parley: low confidence asks to rephrase, then hands off", FALLBACK_INTENT,
         FALLBACK_ACTION),
)

HANDOFF_EXAMPLES = (
    "agent", "AGENT", "talk to a person", "i want to talk to a human", "can i speak to someone",
    "real person please", "connect me to an agent", "human please", "let me talk to a human",
    "i need a real person", "transfer me to customer service", "speak to a representative",
    "live agent", "i'd like to speak with a person", "escalate this to a human",
    "quero falar com uma pessoa", "posso falar com alguém", "falar com um humano",
    "atendimento humano por favor", "quero falar com um atendente",
)

INTENTS = (HANDOFF_INTENT,)
ACTIONS = (HANDOFF_ACTION, FALLBACK_ACTION)
SLOTS: dict[str, dict[str, Any]] = {REASON_SLOT: {
    "type": "categorical",
    "values": list(REASONS[:4]),
    "influence_conversation": False,
    "mappings": [{"type": "custom"}],
}}

# The pipeline entries and their settings `parley init` adds (after the
# project's own classifiers: FallbackClassifier, then the keyword override last).
FALLBACK_SETTINGS: dict[str, Any] = {"threshold": 0.6, "ambiguity_threshold": 0.1}
# Behind Parley's SentenceIntentClassifier, whose confidence is probability times
# familiarity (lower than a softmax alone): the demo's tuned setting.
SENTENCE_FALLBACK_SETTINGS: dict[str, Any] = {"threshold": 0.1, "ambiguity_threshold": 0.0}
KEYWORD_SETTINGS: dict[str, Any] = {"keywords": {"agent": HANDOFF_INTENT}}


# Rasa's built-in input channels: each hands messages to Rasa directly, around Parley's
# inbox and ownership gate. `parley init` removes the generic ones (rest, socketio,
# callback) and names the platform ones, which need Parley's connector instead.
BYPASSING_CHANNELS = ("rest", "socketio", "callback", "rasa", "telegram", "facebook",
                      "slack", "twilio", "botframework", "mattermost", "rocketchat",
                      "webexteams", "hangouts", "twilio_voice", "audiocodes_vac")
REMOVABLE_CHANNELS = ("rest", "socketio", "callback")
