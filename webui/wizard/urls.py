from django.urls import path

from webui.wizard.views import audit, devices, groups, hosts, jobs, topology, vmconfig, wizard, wizard_actions

# Pages of one host live under /hosts/<name>/; jobs and the audit log span every host.
urlpatterns = [
    path("", hosts.home, name="home"),
    path("hosts/<str:host>/", hosts.host_home, name="host_home"),
    path("hosts/<str:host>/wizard/", wizard.wizard, name="wizard"),
    path("hosts/<str:host>/wizard/<int:step>/", wizard.wizard_step, name="wizard_step"),
    path("hosts/<str:host>/wizard/<int:step>/submit/", wizard_actions.wizard_submit, name="wizard_submit"),
    path("hosts/<str:host>/wizard/restart/", wizard_actions.wizard_restart, name="wizard_restart"),
    path("hosts/<str:host>/readiness/", hosts.readiness, name="readiness"),
    path("hosts/<str:host>/readiness/<str:check>/apply/", hosts.apply_fix, name="apply_fix"),
    path("hosts/<str:host>/scan/", hosts.scan, name="scan"),
    path("hosts/<str:host>/devices/", groups.groups, name="groups"),
    path("hosts/<str:host>/devices/<str:address>/", devices.device, name="device"),
    path("hosts/<str:host>/devices/<str:address>/reset/", devices.reset_device, name="reset_device"),
    path("hosts/<str:host>/devices/<str:address>/sriov/", devices.set_vfs, name="set_vfs"),
    path("hosts/<str:host>/groups/<int:group>/bind/", devices.bind_group, name="bind_group"),
    path("hosts/<str:host>/groups/<int:group>/review/", devices.review_group, name="review_group"),
    path("hosts/<str:host>/groups/<int:group>/give-back/", devices.give_back_group, name="give_back_group"),
    path("hosts/<str:host>/topology/", topology.topology, name="topology"),
    path("hosts/<str:host>/vmconfig/", vmconfig.vmconfig, name="vmconfig"),
    path("hosts/<str:host>/vmconfig/download/", vmconfig.download, name="vmconfig_download"),
    path("jobs/", jobs.job_list, name="jobs"),
    path("jobs/<int:pk>/", jobs.job_detail, name="job"),
    path("jobs/<int:pk>/undo/", jobs.undo, name="job_undo"),
    path("jobs/<int:pk>/give-back/", jobs.give_back, name="job_give_back"),
    path("jobs/<int:pk>/cancel/", jobs.cancel, name="job_cancel"),
    path("audit/", audit.audit_log, name="audit"),
    path("audit/export.<str:fmt>", audit.export, name="audit_export"),
]
