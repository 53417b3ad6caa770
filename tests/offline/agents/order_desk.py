"""A voice agent with the offline pipeline: AgentSession with nbagents.offline STT/TTS, ScriptedLLM and a
function tool. The same code runs as a plain livekit-agents worker (`python order_desk.py dev`) and as an
nbagents job (`nbagents.launch(entrypoint, prewarm=prewarm)`); `prewarm` loads the models once per process,
ahead of the job (livekit-agents' setup function, nbagents' warm pool)."""

import logging

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, RunContext, cli, function_tool, inference

from nbagents.offline import STT, TTS, ScriptedLLM, call, digits

ORDERS = {"427": "shipped", "512": "being packed"}
QUESTIONS = ["what is the status of order 427", "what is the status of order 512", "thank you goodbye"]
GREETING = "Hello, this is the order desk."


class OrderDesk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You look up orders.")

    @function_tool
    async def order_status(self, context: RunContext, order_id: str) -> str:
        """Look up the status of an order."""
        return ORDERS.get(order_id, "not an order I know")


def scripted() -> ScriptedLLM:
    def look_up(match):
        number = digits(match["number"])  # the offline STT spells numbers out: "four hundred twenty seven"
        return call("order_status", order_id=number, then=f"Order {number} is {{result}}.")

    return ScriptedLLM([(r"order (?P<number>[a-z0-9 ]+)", look_up), (r"goodbye", "Goodbye!")], default="Sorry, which order?")


def prewarm(proc: JobProcess) -> None:
    """Load the models once per process: the VAD, the phrase model of the STT and the TTS voice."""
    vad = inference.VAD()
    tts = TTS()
    tts.prewarm()
    proc.userdata.update(vad=vad, stt=STT(phrases=QUESTIONS, vad=vad), tts=tts)


async def entrypoint(ctx: JobContext):
    logging.getLogger("order_desk").info("entrypoint started")
    if "tts" not in ctx.proc.userdata:  # run without the prewarm function
        prewarm(ctx.proc)
    models = ctx.proc.userdata
    await ctx.connect()
    session = AgentSession(
        vad=models["vad"],
        stt=models["stt"],
        llm=scripted(),
        tts=models["tts"],
        turn_handling={"turn_detection": "vad", "endpointing": {"min_delay": 0.3}},
    )
    await session.start(agent=OrderDesk(), room=ctx.room)
    logging.getLogger("order_desk").info("session started")
    await session.say(GREETING)
    logging.getLogger("order_desk").info("greeted")


server = AgentServer(setup_fnc=prewarm, initialize_process_timeout=60.0, shutdown_process_timeout=10.0)
server.rtc_session(entrypoint, agent_name="")

if __name__ == "__main__":
    cli.run_app(server)
