"""Pickers: choose an organization, team or key by its name instead of typing its id.

Up to PICKER_SELECT_MAX objects a picker is a <select> (teams and keys grouped per
organization in <optgroup>s); above that, an <input> with a <datalist> of them, which
browsers filter as one types (a name or an id). Either way the value sent is the public id,
and the server looks it up again in the picker's queryset: what a picker offers is never
trusted, and a queryset narrowed to one organization refuses another's objects."""

from django import forms
from django.utils.html import format_html, format_html_join

from orgs.models import Organization
from teams.models import Team, VirtualKey

PICKER_SELECT_MAX = 300  # a <select> stays usable up to a few hundred options
DATALIST_MAX = 5000  # a <datalist> beyond this is no help either: type the id


def _organizations():
    return Organization.objects.order_by("name", "pk")


def _teams():
    return Team.objects.select_related("organization").order_by("organization__name", "name", "pk")


def _keys():
    return VirtualKey.objects.select_related("team__organization").order_by(
        "team__organization__name", "team__name", "name", "pk"
    )


# kind: (its queryset, the word for it, the <optgroup> of an object, its label in a datalist)
KINDS = {
    "organization": (_organizations, "organization", None, lambda o: o.name),
    "team": (
        _teams,
        "team",
        lambda t: t.organization.name,
        lambda t: f"{t.name} · {t.organization.name}",
    ),
    "key": (
        _keys,
        "key",
        lambda k: f"{k.team.organization.name} / {k.team.name}",
        lambda k: f"{k.name} · {k.team.name} · {k.team.organization.name}",
    ),
}


def _label(kind: str, obj) -> str:
    return obj.name if kind != "key" else f"{obj.name} ({obj.key_prefix}…)"


class PickerWidget(forms.Widget):
    """Renders a picker of `kind` over `queryset` (default: every object of the kind)."""

    def __init__(self, kind: str, *, empty_label: str = "—", queryset=None, attrs=None):
        super().__init__(attrs)
        self.kind, self.empty_label, self.queryset = kind, empty_label, queryset

    def objects(self):
        return self.queryset if self.queryset is not None else KINDS[self.kind][0]()

    def format_value(self, value):
        if isinstance(value, Organization | Team | VirtualKey):
            return value.public_id
        return "" if value is None else str(value)

    def render(self, name, value, attrs=None, renderer=None):
        value = self.format_value(value)
        attrs = self.build_attrs(self.attrs, attrs)
        rows = list(self.objects()[: DATALIST_MAX + 1])
        if len(rows) > PICKER_SELECT_MAX:
            return self._datalist(name, value, attrs, rows[:DATALIST_MAX])
        return self._select(name, value, attrs, rows)

    def _select(self, name, value, attrs, rows):
        group_of = KINDS[self.kind][2]
        groups: dict[str | None, list] = {}
        for obj in rows:
            groups.setdefault(group_of(obj) if group_of else None, []).append(obj)

        def options(objs):
            return format_html_join(
                "",
                '<option value="{}"{}>{}</option>',
                (
                    (o.public_id, " selected" if o.public_id == value else "", _label(self.kind, o))
                    for o in objs
                ),
            )

        body = format_html_join(
            "",
            "{}",
            (
                (options(objs),)
                if group is None
                else (format_html('<optgroup label="{}">{}</optgroup>', group, options(objs)),)
                for group, objs in groups.items()
            ),
        )
        return format_html(
            '<select name="{}"{}><option value="">{}</option>{}</select>',
            name,
            forms.utils.flatatt(attrs),
            self.empty_label,
            body,
        )

    def _datalist(self, name, value, attrs, rows):
        list_id = f"{attrs.get('id') or name}_choices"
        attrs = {
            **attrs,
            "list": list_id,
            "autocomplete": "off",
            "placeholder": f"Type a {KINDS[self.kind][1]}'s name or id",
        }
        label_of = KINDS[self.kind][3]
        options = format_html_join(
            "", '<option value="{}">{}</option>', ((o.public_id, label_of(o)) for o in rows)
        )
        return format_html(
            '<input type="text" name="{}" value="{}"{}><datalist id="{}">{}</datalist>',
            name,
            value,
            forms.utils.flatatt(attrs),
            list_id,
            options,
        )

    def value_from_datadict(self, data, files, name):
        return data.get(name)


class PickerField(forms.Field):
    """An organization, team or key picked by name; cleaned to the object (None when blank).

    `queryset` narrows what may be picked (tenant scoping); a value outside it is refused as
    unknown, exactly like a mistyped id."""

    def __init__(self, kind: str, *, queryset=None, empty_label: str = "—", **kwargs):
        self.kind, self._queryset = kind, queryset
        kwargs.setdefault("widget", PickerWidget(kind, empty_label=empty_label, queryset=queryset))
        super().__init__(**kwargs)

    @property
    def queryset(self):
        return self._queryset if self._queryset is not None else KINDS[self.kind][0]()

    @queryset.setter
    def queryset(self, queryset):
        self._queryset = queryset
        self.widget.queryset = queryset

    def __deepcopy__(self, memo):
        result = super().__deepcopy__(memo)
        result.widget.queryset = result._queryset
        return result

    def to_python(self, value):
        if isinstance(value, Organization | Team | VirtualKey):
            return value
        public_id = (value or "").strip() if isinstance(value, str | type(None)) else str(value)
        if not public_id:
            return None
        if len(public_id) > 40 or "\x00" in public_id:
            raise forms.ValidationError(f"That is not a {KINDS[self.kind][1]} id.")
        obj = self.queryset.filter(public_id=public_id).first()
        if obj is None:
            raise forms.ValidationError(f"No {KINDS[self.kind][1]} with id {public_id}.")
        return obj

    def prepare_value(self, value):
        return value.public_id if hasattr(value, "public_id") else value

    def has_changed(self, initial, data):
        return self.prepare_value(initial) != (data or "")


def picker(kind: str, *, name: str, value: str = "", id: str = "", empty_label="Any") -> str:
    """A picker for a GET filter form (the list pages): the same widget, no form around it."""
    return PickerWidget(kind, empty_label=empty_label).render(name, value, {"id": id or name})
