"""A voice agent with the offline pipeline, run as a plain livekit-agents worker (`python order_desk.py start`)."""

import logging

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, RunContext, cli, function_tool, inference

from nbagents.offline import STT, TTS, ScriptedLLM, call

ORDERS = {"427": "shipped", "512": "being packed"}
QUESTIONS = ["what is the status of order 427", "what is the status of order 512", "thank you goodbye"]


class OrderDesk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You look up orders.")

    @function_tool
    async def order_status(self, context: RunContext, order_id: str) -> str:
        """Look up the status of an order."""
        return ORDERS.get(order_id, "not an order I know")


def scripted() -> ScriptedLLM:
    return ScriptedLLM(
        [
            (r"order (?P<id>(?:\w+ ?)+)", lambda m: call("order_status", order_id=_digits(m["id"]), then="Order {id} is {result}.")),
            (r"goodbye", "Goodbye!"),
        ],
        default="Sorry, which order?",
    )


def _digits(spoken: str) -> str:
    numbers = {"four hundred twenty seven": "427", "five hundred twelve": "512"}
    return numbers.get(spoken.strip(), spoken.strip())


async def entrypoint(ctx: JobContext):
    logging.getLogger("order_desk").info("entrypoint started")
    session = AgentSession(
        vad=inference.VAD(),
        stt=STT(phrases=QUESTIONS),
        llm=scripted(),
        tts=TTS(),
        turn_handling={"turn_detection": "vad", "endpointing": {"min_delay": 0.3}},
    )
    logging.getLogger("order_desk").info("session created")
    await session.start(agent=OrderDesk(), room=ctx.room)
    logging.getLogger("order_desk").info("session started")
    await session.say("Hello, this is the order desk.")
    logging.getLogger("order_desk").info("greeted")


server = AgentServer(setup_fnc=None, initialize_process_timeout=30.0, shutdown_process_timeout=10.0)
server.rtc_session(entrypoint, agent_name="")

if __name__ == "__main__":
    cli.run_app(server)
