"""Simulated participants: real ``livekit`` clients, each in its own process, that a notebook drives.

    async with nbagents.sim.join("demo", "alice", attributes={"user.language": "en"}) as alice:
        await alice.play_tone(440, seconds=1.0)       # a microphone track, 10 ms frames at real-time pace;
                                                       # returns what the server acknowledged receiving
        await alice.set_attributes({"user.language": "fr"})
        await alice.send_data("hi", topic="chat")
        packet = await alice.wait_for_data()           # or look at alice.received

    async with nbagents.sim.join("demo", "bob", listen=True) as bob:     # needs nbagents[offline]
        await bob.say("where is my order")             # offline TTS into the microphone, real time
        reply = await bob.wait_for_speech(timeout=20)  # offline STT over what bob hears; all of it in bob.heard

The kernel never hosts an rtc client (a crash there must not take the notebook down): each participant's
``rtc.Room`` lives in a child process that the kernel talks to over a line-based pipe.
"""

from nbagents.sim._participant import AudioNotDelivered, HeardSpeech, ReceivedData, SimError, SimulatedParticipant, join
from nbagents.sim._protocol import KINDS

__all__ = ["KINDS", "AudioNotDelivered", "HeardSpeech", "ReceivedData", "SimError", "SimulatedParticipant", "join"]
