"""The built-in phone agent: screenshots from an Android phone, AutoGLM's answers, actions back to the phone.

>>> from autoglm_gguf import AutoGLM
>>> from autoglm_gguf.agent import PhoneAgent, AdbDevice, system_prompt
>>> llm = AutoGLM("AutoGLM-Phone-9B-Q4_0.gguf", mmproj_path="mmproj-AutoGLM-Phone-9B-F16.gguf", n_ctx=16384)
>>> PhoneAgent(llm, AdbDevice(), system_prompt=system_prompt("en")).run("Open Settings and turn on Wi-Fi")
"""

from .backends import LocalModel, RemoteModel
from .conversation import system_prompt
from .device import AdbDevice, Device, DeviceError, ReplayDevice, Screenshot
from .executor import StepOutcome, execute
from .hdc import HdcDevice
from .loop import AgentResult, PhoneAgent, StepResult

__all__ = ["AdbDevice", "AgentResult", "Device", "DeviceError", "HdcDevice", "LocalModel", "PhoneAgent", "RemoteModel",
           "ReplayDevice", "Screenshot", "StepOutcome", "StepResult", "execute", "system_prompt"]
