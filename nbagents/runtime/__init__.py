"""The job runtime: one OS process per job, driven from a notebook kernel.

Kernel side: ``launch`` (start a job), ``job`` (the ``Job`` model), ``pool`` (warm processes forked from a
preloaded zygote), ``engine_session`` (the kernel's shared LiveKit server). Job side: ``worker`` (the
job process's main), ``context`` (JobContext and friends), ``monitor`` (room and audio events).
Between them: ``ipc`` (framed messages) and ``events`` (the typed events).
"""
