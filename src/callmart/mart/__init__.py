"""The call-center mart: the one place that names the business tables, their sources and rules (`sample` writes
extracts in their formats)."""

from __future__ import annotations

from datetime import timedelta

from ..declare import (
    Case,
    Check,
    Column,
    Dimension,
    Fact,
    FirstEventWithin,
    Format,
    Mart,
    Parse,
    Reference,
    Source,
    Type,
)

__all__ = ["MART", "CALLS"]

US_MINUTE = "%m/%d/%Y %H:%M"
US_SECOND = "%m/%d/%Y %H:%M:%S"
NOT_GIVEN = ("", "NA", "N/A", "NULL")


def business_id(name: str, source: str, doc: str) -> Column:
    """An integer business id that every source row must have."""
    return Column(name, Type.INTEGER, source, Parse.INTEGER, required=True, doc=doc)


def attribute(name: str, source: str, doc: str, case: Case | None = None) -> Column:
    """A text attribute; a missing value becomes 'unknown'."""
    return Column(name, Type.TEXT, source, case=case, missing=NOT_GIVEN, default="unknown", doc=doc)


CLIENTES = Dimension(
    name="dim_clientes",
    key="key_cliente",
    business_key="id_cliente",
    source=Source("Customers*.csv"),
    columns=(
        business_id("id_cliente", "CustomerID", "the customer's id in the company's systems"),
        attribute("genero_cliente", "Gender", "the customer's gender as exported, upper case", Case.UPPER),
        attribute("tipo_cliente", "Type", "the customer's segment (GEM, REGULAR, ...), upper case", Case.UPPER),
    ),
    doc="The company's customers: small shopkeepers and people with little access to credit.",
)

AGENTES = Dimension(
    name="dim_agentes",
    key="key_agente",
    business_key="id_agente",
    source=Source("Agentes*.csv"),
    columns=(
        business_id("id_agente", "idagente", "the agent's id in the call center's systems"),
        # Calls name the agent by login name; logins are case-insensitive.
        Column(
            "agente",
            Type.TEXT,
            "agente",
            case=Case.LOWER,
            required=True,
            doc="the agent's login name, lower case: calls name their agent by it",
        ),
        Column(
            "nivel_expertise_agente",
            Type.INTEGER,
            "nivelexpertise",
            Parse.INTEGER,
            missing=NOT_GIVEN,
            doc="the agent's level of expertise (1 = junior)",
        ),
        attribute("nombre_agente", "nombre", "the agent's first name"),
        attribute("apellido_agente", "apellido", "the agent's last name"),
    ),
    doc="The call center's agents.",
    label=("nombre_agente", "apellido_agente"),
)

CANALES = Dimension(
    name="dim_canales_digitales",
    key="key_canal_digital",
    business_key="id_canal_digital",
    source=Source("CanalDigital*.csv"),
    columns=(
        business_id("id_canal_digital", "idcanal", "the channel's id"),
        attribute("descripcion_canal_digital", "desc_canal", "the channel's name (Whatsapp, AppCallCore, ...)"),
    ),
    doc="The digital channels clients are nudged to use (WhatsApp, the app).",
    label=("descripcion_canal_digital",),
)

LOGINS = Dimension(
    name="dim_logins",
    key="key_login",
    business_key="id_login",
    source=Source("logins*.json", Format.JSON_ARRAY, encoding="utf-8"),
    columns=(
        business_id("id_login", "callid", "the login's id (the export calls it callid)"),
        Column(
            "fecha_login",
            Type.TIMESTAMP,
            "logindate",
            Parse.DATETIME,
            fmt=US_SECOND,
            required=True,
            doc="when the customer logged in to the digital channel",
        ),
    ),
    doc="Logins of customers to the digital channels: the events a call hopes to cause.",
    references=(
        Reference(
            "key_cliente_login",
            "dim_clientes",
            by="id_cliente",
            value=Column("id_cliente_login", Type.INTEGER, "customerid", Parse.INTEGER, doc="the customer's id"),
            as_of="fecha_login",
            doc="the customer who logged in",
        ),
        Reference(
            "key_canal_digital_login",
            "dim_canales_digitales",
            by="id_canal_digital",
            value=Column("id_canal_digital_login", Type.INTEGER, "channel", Parse.INTEGER, doc="the channel's id"),
            as_of="fecha_login",
            doc="the channel logged in to",
        ),
    ),
)

CALLS = Fact(
    name="fact_llamadas",
    key="key_llamada",
    time_column="fecha_llamada",
    source=Source("Llamadas*.csv"),
    columns=(
        Column(
            "fecha_llamada",
            Type.TIMESTAMP,
            "Fecha",
            Parse.DATETIME,
            fmt=US_MINUTE,
            required=True,
            doc="when the call was made, to the minute (the period a call belongs to is its day)",
        ),
        # Campaign names arrive in mixed case; the business treats them as one.
        Column(
            "campania_llamada",
            Type.TEXT,
            "Campania",
            case=Case.UPPER,
            missing=NOT_GIVEN,
            default="unknown",
            doc="the campaign the call was part of, upper case; 'unknown' when not given",
        ),
        Column("telefono_llamada", Type.TEXT, "Telefono", missing=NOT_GIVEN, doc="the phone number called"),
        Column(
            "tiempo_hablado_llamada",
            Type.TIME,
            "Tiempohablado",
            Parse.DURATION,
            required=True,
            doc="talk time (H:MM:SS as a time of day); 0:00:00 when nobody picked up",
        ),
        Column(
            "tiempo_total_llamada",
            Type.TIME,
            "Tiempototal",
            Parse.DURATION,
            required=True,
            doc="total time of the call, ringing included (H:MM:SS as a time of day)",
        ),
        Column(
            "segundos_hablados_llamada",
            Type.INTEGER,
            "Tiempohablado",
            Parse.DURATION,
            required=True,
            doc="talk time in seconds, for sums and thresholds",
        ),
        Column(
            "segundos_totales_llamada",
            Type.INTEGER,
            "Tiempototal",
            Parse.DURATION,
            required=True,
            doc="total time in seconds",
        ),
    ),
    references=(
        Reference(
            "key_cliente_llamada",
            "dim_clientes",
            by="id_cliente",
            # -1 marks a call to someone who is not a customer yet.
            value=Column(
                "id_cliente_llamada",
                Type.INTEGER,
                "IDCliente",
                Parse.INTEGER,
                missing=("", "-1"),
                doc="the customer's id; -1 in the export: not a customer",
            ),
            as_of="fecha_llamada",
            doc="the customer called; -999 (the default member) for a call to someone who is not a customer",
        ),
        Reference(
            "key_agente_llamada",
            "dim_agentes",
            by="agente",
            value=Column(
                "agente_llamada", Type.TEXT, "Agente", case=Case.LOWER, missing=NOT_GIVEN, doc="the agent's login"
            ),
            as_of="fecha_llamada",
            doc="the agent who made the call, found by login name",
        ),
    ),
    metrics=(
        FirstEventWithin(
            column="key_login_post_llamada",
            events="dim_logins",
            event_time="fecha_login",
            event_entity="key_cliente_login",
            fact_time="fecha_llamada",
            fact_entity="key_cliente_llamada",
            window=timedelta(hours=48),
            threshold_column="segundos_hablados_llamada",
            threshold=30,
        ),
    ),
    checks=(
        Check("talk time greater than total time", "segundos_hablados_llamada", "segundos_totales_llamada"),
        Check("talk time over 4 hours", "segundos_hablados_llamada", 4 * 3600),
        Check("total time over 4 hours", "segundos_totales_llamada", 4 * 3600),
    ),
    # The source has no call id: two identical rows may be two calls, or one exported twice.
    warn_duplicate_rows=True,
    doc="One row per call of the call center to a client, loaded day by day (dm_processes).",
)

MART = Mart(dimensions=(CLIENTES, AGENTES, CANALES, LOGINS), facts=(CALLS,), missing=NOT_GIVEN)
