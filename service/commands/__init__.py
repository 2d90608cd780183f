"""The subcommands of ``omgate``, one module each: its name and help, the arguments it
adds to its parser, and what runs it (``service/cli.py`` assembles them).

A command's tool is imported when the command runs, never when the command line is
parsed: ``omgate --help`` loads none of them, and ``omgate serve`` sets up its workers'
metrics folder before anything imports prometheus_client.
"""
