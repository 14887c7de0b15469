import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_OK: _ClassVar[Status]
    STATUS_DEGRADED: _ClassVar[Status]
    STATUS_ERROR: _ClassVar[Status]
    STATUS_CRITICAL: _ClassVar[Status]

class ActionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_TYPE_UNSPECIFIED: _ClassVar[ActionType]
    ACTION_TYPE_ACCEPT: _ClassVar[ActionType]
    ACTION_TYPE_COUNTER: _ClassVar[ActionType]
    ACTION_TYPE_REJECT: _ClassVar[ActionType]
    ACTION_TYPE_APPROVE: _ClassVar[ActionType]
    ACTION_TYPE_CANCEL: _ClassVar[ActionType]
    ACTION_TYPE_UPDATE: _ClassVar[ActionType]
    ACTION_TYPE_EVALUATE: _ClassVar[ActionType]
    ACTION_TYPE_ERROR: _ClassVar[ActionType]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_ERROR: Severity
SEVERITY_CRITICAL: Severity
STATUS_UNSPECIFIED: Status
STATUS_OK: Status
STATUS_DEGRADED: Status
STATUS_ERROR: Status
STATUS_CRITICAL: Status
ACTION_TYPE_UNSPECIFIED: ActionType
ACTION_TYPE_ACCEPT: ActionType
ACTION_TYPE_COUNTER: ActionType
ACTION_TYPE_REJECT: ActionType
ACTION_TYPE_APPROVE: ActionType
ACTION_TYPE_CANCEL: ActionType
ACTION_TYPE_UPDATE: ActionType
ACTION_TYPE_EVALUATE: ActionType
ACTION_TYPE_ERROR: ActionType

class TraceContext(_message.Message):
    __slots__ = ("trace_id", "span_id", "trace_flags", "trace_state")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_FLAGS_FIELD_NUMBER: _ClassVar[int]
    TRACE_STATE_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    span_id: str
    trace_flags: str
    trace_state: str
    def __init__(self, trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., trace_flags: _Optional[str] = ..., trace_state: _Optional[str] = ...) -> None: ...

class NegotiationEvent(_message.Message):
    __slots__ = ("item_identifier", "item_domain", "action", "price")
    ITEM_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    ITEM_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    item_identifier: str
    item_domain: str
    action: ActionType
    price: float
    def __init__(self, item_identifier: _Optional[str] = ..., item_domain: _Optional[str] = ..., action: _Optional[_Union[ActionType, str]] = ..., price: _Optional[float] = ...) -> None: ...

class VitalsEvent(_message.Message):
    __slots__ = ("service", "status", "cpu_usage_percent", "memory_usage_mb")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_MB_FIELD_NUMBER: _ClassVar[int]
    service: str
    status: Status
    cpu_usage_percent: float
    memory_usage_mb: float
    def __init__(self, service: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., cpu_usage_percent: _Optional[float] = ..., memory_usage_mb: _Optional[float] = ...) -> None: ...

class AlertEvent(_message.Message):
    __slots__ = ("severity", "message", "source")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    severity: Severity
    message: str
    source: str
    def __init__(self, severity: _Optional[_Union[Severity, str]] = ..., message: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class HeartbeatEvent(_message.Message):
    __slots__ = ("service", "instance_id", "status")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    status: Status
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("repo_name", "is_pure", "heresies", "negotiation_success_rate")
    REPO_NAME_FIELD_NUMBER: _ClassVar[int]
    IS_PURE_FIELD_NUMBER: _ClassVar[int]
    HERESIES_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATION_SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    repo_name: str
    is_pure: bool
    heresies: _containers.RepeatedScalarFieldContainer[str]
    negotiation_success_rate: float
    def __init__(self, repo_name: _Optional[str] = ..., is_pure: _Optional[bool] = ..., heresies: _Optional[_Iterable[str]] = ..., negotiation_success_rate: _Optional[float] = ...) -> None: ...

class LogEvent(_message.Message):
    __slots__ = ("level", "message", "logger_name", "worker_name")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOGGER_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    level: str
    message: str
    logger_name: str
    worker_name: str
    def __init__(self, level: _Optional[str] = ..., message: _Optional[str] = ..., logger_name: _Optional[str] = ..., worker_name: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("identifier", "topic", "timestamp", "metadata", "trace", "negotiation", "vitals", "alert", "heartbeat", "audit", "log")
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATION_FIELD_NUMBER: _ClassVar[int]
    VITALS_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    identifier: str
    topic: str
    timestamp: _timestamp_pb2.Timestamp
    metadata: _struct_pb2.Struct
    trace: TraceContext
    negotiation: NegotiationEvent
    vitals: VitalsEvent
    alert: AlertEvent
    heartbeat: HeartbeatEvent
    audit: AuditEvent
    log: LogEvent
    def __init__(self, identifier: _Optional[str] = ..., topic: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ..., negotiation: _Optional[_Union[NegotiationEvent, _Mapping]] = ..., vitals: _Optional[_Union[VitalsEvent, _Mapping]] = ..., alert: _Optional[_Union[AlertEvent, _Mapping]] = ..., heartbeat: _Optional[_Union[HeartbeatEvent, _Mapping]] = ..., audit: _Optional[_Union[AuditEvent, _Mapping]] = ..., log: _Optional[_Union[LogEvent, _Mapping]] = ...) -> None: ...
