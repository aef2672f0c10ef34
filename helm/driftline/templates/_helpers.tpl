{{/*
Chart name, truncated to 63 characters (DNS label).
*/}}
{{- define "driftline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, with the chart name unless the release name holds it. Resource names
append "-<service>", so keep 12 characters of room.
*/}}
{{- define "driftline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "driftline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "driftline.labels" -}}
helm.sh/chart: {{ include "driftline.chart" . }}
{{ include "driftline.selectorLabels" . }}
app.kubernetes.io/part-of: driftline
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the release's pods.
*/}}
{{- define "driftline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one service's resources; call with (dict "root" $ "service" "<name>").
*/}}
{{- define "driftline.serviceLabels" -}}
{{ include "driftline.labels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{/*
Labels that select one service's pods; call with (dict "root" $ "service" "<name>").
*/}}
{{- define "driftline.serviceSelectorLabels" -}}
{{ include "driftline.selectorLabels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "driftline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "driftline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image: `<repository>@<digest>` when `image.digest` is set (the exact image on every node),
else `<repository>:<tag>`, the tag defaulting to the chart's appVersion.
*/}}
{{- define "driftline.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A list value of every pod (`extraEnv`, `extraVolumes`, `extraVolumeMounts`) followed by the
component's own, as YAML (empty when both are). Call with (dict "root" $ "values" <component's
values or nil> "key" "<name>").
*/}}
{{- define "driftline.extraList" -}}
{{- $items := concat (get .root.Values .key | default list) (get (.values | default dict) .key | default list) }}
{{- with $items }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
The PriorityClass of a component's pods: its own `priorityClassName`, else the global one. Call
with (dict "root" $ "values" <component's values or nil>).
*/}}
{{- define "driftline.priorityClassName" -}}
{{- get (.values | default dict) "priorityClassName" | default .root.Values.priorityClassName }}
{{- end }}

{{/*
Every public topic, as shared/topics.py declares it (tests/deploy checks this list against it).
Values are strings: fromYaml would turn numbers into floats.
*/}}
{{- define "driftline.topics" -}}
topics:
  - name: events.raw
    cleanupPolicy: delete
    retentionMs: "604800000"
    singlePartition: false
  - name: features
    cleanupPolicy: delete
    retentionMs: "604800000"
    singlePartition: false
  - name: predictions
    cleanupPolicy: delete
    retentionMs: "604800000"
    singlePartition: false
  - name: feedback
    cleanupPolicy: delete
    retentionMs: "604800000"
    singlePartition: false
  - name: predictions.labeled
    cleanupPolicy: delete
    retentionMs: "604800000"
    singlePartition: false
  - name: alerts
    cleanupPolicy: delete
    retentionMs: "604800000"
    singlePartition: false
  - name: decisions
    cleanupPolicy: delete
    retentionMs: "604800000"
    singlePartition: false
  - name: deadletter
    cleanupPolicy: delete
    retentionMs: "2592000000"
    singlePartition: false
  - name: deployments
    cleanupPolicy: compact
    singlePartition: true
  - name: model-snapshots
    cleanupPolicy: compact
    singlePartition: false
  - name: streams
    cleanupPolicy: compact
    singlePartition: true
{{- end }}

{{/*
Namespace of the Strimzi resources.
*/}}
{{- define "driftline.strimziNamespace" -}}
{{- default .Release.Namespace .Values.strimzi.namespace }}
{{- end }}

{{/*
Base name of the KafkaUsers: each principal of shared/access.py gets `<base>-<principal>` (and
Strimzi a Secret of that name).
*/}}
{{- define "driftline.kafkaUserName" -}}
{{- default (include "driftline.fullname" .) .Values.strimzi.user.name }}
{{- end }}

{{/*
"true" when clients authenticate with SASL.
*/}}
{{- define "driftline.sasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/*
"true" when clients talk TLS to the brokers.
*/}}
{{- define "driftline.tls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/*
SASL user name of a principal (a service, retrain, operator): its own KafkaUser's with
`strimzi.user.enabled`, else the one of the values. Call with (dict "root" $ "principal" <name>).
*/}}
{{- define "driftline.saslUsername" -}}
{{- if .root.Values.strimzi.user.enabled }}
{{- printf "%s-%s" (include "driftline.kafkaUserName" .root) .principal }}
{{- else }}
{{- .root.Values.kafka.sasl.username }}
{{- end }}
{{- end }}

{{/*
Secret with a principal's SASL password: its KafkaUser's with `strimzi.user.enabled`, else the
one of the values. Call with (dict "root" $ "principal" <name>).
*/}}
{{- define "driftline.saslSecretName" -}}
{{- if .root.Values.strimzi.user.enabled }}
{{- printf "%s-%s" (include "driftline.kafkaUserName" .root) .principal }}
{{- else }}
{{- .root.Values.kafka.sasl.existingSecret }}
{{- end }}
{{- end }}

{{/*
Secret with the brokers' CA certificate: the value, else the Strimzi cluster CA's Secret.
*/}}
{{- define "driftline.caSecretName" -}}
{{- if .Values.kafka.tls.caSecret }}
{{- .Values.kafka.tls.caSecret }}
{{- else if .Values.strimzi.user.enabled }}
{{- printf "%s-cluster-ca-cert" .Values.strimzi.clusterName }}
{{- end }}
{{- end }}

{{/*
Secret with the HMAC keys.
*/}}
{{- define "driftline.hmacSecretName" -}}
{{- default (printf "%s-hmac" (include "driftline.fullname" .)) .Values.hmac.existingSecret }}
{{- end }}

{{/*
The chart's HMAC Secret data (base64 values by key) that must be kept: from `hmac.keys` when
given, else the Secret already in the cluster; empty at a first install (keys are then made).
*/}}
{{- define "driftline.hmacData" -}}
{{- $keys := .Values.hmac.keys | default dict }}
{{- if and $keys.snapshot $keys.webhook $keys.state }}
{{ .Values.hmac.snapshotKey }}: {{ $keys.snapshot | b64enc }}
{{ .Values.hmac.webhookKey }}: {{ $keys.webhook | b64enc }}
{{ .Values.hmac.stateKey }}: {{ $keys.state | b64enc }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "driftline.hmacSecretName" .) }}
{{- if and $existing $existing.data }}
{{- toYaml $existing.data }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the chart would make new HMAC keys at a rendering that cannot see the cluster: `helm
template`, Argo CD, client-side dry runs (`lookup` then answers nothing, even for a list).
*/}}
{{- define "driftline.hmacKeysWouldRotate" -}}
{{- if not (or .Values.hmac.existingSecret (include "driftline.hmacData" .)) }}
{{- if not (lookup "v1" "Secret" .Release.Namespace "") }}true{{ end }}
{{- end }}
{{- end }}

{{/*
How fast an autoscaler (the CPU HPA, or the one KEDA makes) may change a service's replicas.
*/}}
{{- define "driftline.scalingBehavior" -}}
# Every step rebalances the consumer group and moves table state: step slowly.
scaleUp:
  stabilizationWindowSeconds: 60
  policies:
    - type: Pods
      value: 1
      periodSeconds: 120
scaleDown:
  stabilizationWindowSeconds: 600
  policies:
    - type: Pods
      value: 1
      periodSeconds: 300
{{- end }}

{{/*
Stops a rendering whose values cannot work, with the reason.
*/}}
{{- define "driftline.validate" -}}
{{- $operator := dict "root" . "principal" "operator" }}
{{- if and (include "driftline.sasl" .) (not (include "driftline.saslUsername" $operator)) }}
{{- fail "kafka.securityProtocol is SASL_*: set kafka.sasl.username and kafka.sasl.existingSecret, or strimzi.user.enabled" }}
{{- end }}
{{- if and (include "driftline.sasl" .) (not (include "driftline.saslSecretName" $operator)) }}
{{- fail "kafka.securityProtocol is SASL_*: set kafka.sasl.existingSecret (the Secret with the SASL password)" }}
{{- end }}
{{- if and .Values.strimzi.user.enabled (not (include "driftline.sasl" .)) }}
{{- fail "strimzi.user.enabled makes a SCRAM-SHA-512 user: set kafka.securityProtocol to SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- if and .Values.topicsJob.enabled .Values.strimzi.user.enabled }}
{{- fail "topicsJob runs before the KafkaUser exists: with strimzi.user.enabled let Strimzi make the topics (strimzi.topics.enabled) and set topicsJob.enabled=false" }}
{{- end }}
{{- if and .Values.keda.enabled (ne .Values.kafka.securityProtocol "PLAINTEXT") (not .Values.keda.authenticationRef) }}
{{- fail "keda.enabled with a secured Kafka: set keda.authenticationRef to a KEDA TriggerAuthentication holding the Kafka credentials" }}
{{- end }}
{{- if not (regexMatch "^[A-Za-z0-9._-]*$" .Values.topics.prefix) }}
{{- fail "topics.prefix: only letters, digits, '.', '_' and '-' may appear in a topic name" }}
{{- end }}
{{- if not (or .Values.mlflow.existingSecret .Values.mlflow.allowAnonymous) }}
{{- fail "mlflow.existingSecret: name the Secret with MLflow's basic-auth credentials (or set mlflow.allowAnonymous=true for an MLflow without authentication)" }}
{{- end }}
{{- $keys := .Values.hmac.keys | default dict }}
{{- if and (or $keys.snapshot $keys.webhook $keys.state) (not (and $keys.snapshot $keys.webhook $keys.state)) }}
{{- fail "hmac.keys: set all three of snapshot, webhook and state (or none, to keep or make the Secret's)" }}
{{- end }}
{{- if include "driftline.hmacKeysWouldRotate" . }}
{{- fail "hmac: this rendering cannot see the cluster (helm template, Argo CD, --dry-run=client), so generated HMAC keys would change on every render and every snapshot signed with the old ones would be refused. Set hmac.existingSecret (a Secret with keys snapshot-key, webhook-key, state-key, e.g. from External Secrets or Sealed Secrets) or hmac.keys.snapshot, hmac.keys.webhook and hmac.keys.state" }}
{{- end }}
{{- end }}

{{/*
Settings and Secrets of a Driftline worker container, which connects to Kafka as its principal
(shared/access.py). Call with (dict "root" $ "principal" <name>).
*/}}
{{- define "driftline.containerEnv" -}}
{{- $principal := . }}
{{- with .root }}
envFrom:
  - configMapRef:
      name: {{ include "driftline.fullname" . }}-settings
env:
  - name: DRIFTLINE_SNAPSHOT_HMAC_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "driftline.hmacSecretName" . }}
        key: {{ .Values.hmac.snapshotKey }}
  - name: DRIFTLINE_WEBHOOK_HMAC_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "driftline.hmacSecretName" . }}
        key: {{ .Values.hmac.webhookKey }}
  - name: DRIFTLINE_STATE_HMAC_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "driftline.hmacSecretName" . }}
        key: {{ .Values.hmac.stateKey }}
  {{- include "driftline.saslEnv" $principal | nindent 2 }}
  {{- with .Values.mlflow.existingSecret }}
  - name: MLFLOW_TRACKING_USERNAME
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $principal.root.Values.mlflow.usernameKey }}
  - name: MLFLOW_TRACKING_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $principal.root.Values.mlflow.passwordKey }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
A principal's SASL user and password variables (none without SASL). Call with (dict "root" $
"principal" <name>).
*/}}
{{- define "driftline.saslEnv" -}}
{{- if include "driftline.sasl" .root }}
- name: DRIFTLINE_KAFKA_SASL_USERNAME
  value: {{ include "driftline.saslUsername" . | quote }}
- name: DRIFTLINE_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "driftline.saslSecretName" . }}
      key: {{ .root.Values.kafka.sasl.passwordKey }}
{{- end }}
{{- end }}

{{/*
Volume mounts of a Driftline container.
*/}}
{{- define "driftline.volumeMounts" -}}
- name: data
  mountPath: {{ .Values.dataDir.path }}
- name: tmp
  mountPath: /tmp
{{- if and (include "driftline.tls" .) (include "driftline.caSecretName" .) }}
- name: kafka-ca
  mountPath: /etc/driftline/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{/*
Volumes of a Driftline pod.
*/}}
{{- define "driftline.volumes" -}}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.dataDir.sizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if and (include "driftline.tls" .) (include "driftline.caSecretName" .) }}
- name: kafka-ca
  secret:
    secretName: {{ include "driftline.caSecretName" . }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{/*
The common settings (shared/settings.py's DriftlineSettings) as a map of variable to value: the
ConfigMap's data, and the topics Job's environment (a hook Job runs before the ConfigMap exists).
*/}}
{{- define "driftline.settings" -}}
DRIFTLINE_KAFKA_BROKER: {{ .Values.kafka.bootstrapServers | quote }}
DRIFTLINE_KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "driftline.sasl" . }}
DRIFTLINE_KAFKA_SASL_MECHANISM: {{ .Values.kafka.sasl.mechanism | quote }}
{{- end }}
{{- if and (include "driftline.tls" .) (include "driftline.caSecretName" .) }}
DRIFTLINE_KAFKA_SSL_CAFILE: /etc/driftline/kafka-ca/ca.crt
{{- end }}
DRIFTLINE_TOPIC_PREFIX: {{ .Values.topics.prefix | quote }}
DRIFTLINE_TOPIC_PARTITIONS: {{ .Values.topics.partitions | quote }}
DRIFTLINE_TOPIC_REPLICATION_FACTOR: {{ .Values.topics.replicationFactor | quote }}
DRIFTLINE_STORE: {{ .Values.settings.store | quote }}
DRIFTLINE_PROCESSING_GUARANTEE: {{ .Values.settings.processingGuarantee | quote }}
DRIFTLINE_MLFLOW_TRACKING_URI: {{ .Values.mlflow.trackingUri | quote }}
DRIFTLINE_DATA_DIR: {{ .Values.dataDir.path | quote }}
DRIFTLINE_WEB_HOST: "0.0.0.0"
DRIFTLINE_LOG_LEVEL: {{ .Values.settings.logLevel | quote }}
DRIFTLINE_LOG_FORMAT: {{ .Values.settings.logFormat | quote }}
{{- end }}

{{/*
A component's own variables: its web port and its `settings` map, as DRIFTLINE_<COMPONENT>_*
(camelCase keys in snake case; lists and maps as JSON; whole numbers, which values files give as
floats, without an exponent: 1000000, not 1e+06). Call with (dict "component" "<name>" "port"
<port> "settings" <map>).
*/}}
{{- define "driftline.componentEnv" -}}
- name: DRIFTLINE_{{ upper .component }}_WEB_PORT
  value: {{ .port | quote }}
{{- range $key, $value := .settings }}
- name: DRIFTLINE_{{ upper $.component }}_{{ snakecase $key | upper }}
  {{- if or (kindIs "slice" $value) (kindIs "map" $value) }}
  value: {{ toJson $value | quote }}
  {{- else if and (kindIs "float64" $value) (eq $value (floor $value)) }}
  value: {{ int64 $value | toString | quote }}
  {{- else }}
  value: {{ $value | toString | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The Deployment of one long-running component: a service's worker or the retrain job. Call with
(dict "root" $ "component" "<name>" "args" (list ...) "port" <web port> "resources" <map>
"settings" <map> "values" <its values: extraEnv, extraVolumes, extraVolumeMounts,
priorityClassName>), and "replicas" <count> unless an HPA owns the count. Probes (`probes`):
startup and readiness on /health, liveness on /live, which every component answers.
*/}}
{{- define "driftline.deployment" -}}
{{- $root := .root }}
{{- $labels := dict "root" $root "service" .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "driftline.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "driftline.serviceLabels" $labels | nindent 4 }}
spec:
  {{- if hasKey . "replicas" }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "driftline.serviceSelectorLabels" $labels | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      annotations:
        checksum/settings: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "driftline.serviceLabels" $labels | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "driftline.serviceAccountName" $root }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "driftline.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ join ", " .args }}]
          {{- include "driftline.containerEnv" (dict "root" $root "principal" .component) | nindent 10 }}
            {{- include "driftline.componentEnv" . | nindent 12 }}
            {{- with include "driftline.extraList" (dict "root" $root "values" .values "key" "extraEnv") }}
            {{- . | nindent 12 }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ .port }}
              protocol: TCP
          startupProbe:
            {{- toYaml $root.Values.probes.startup | nindent 12 }}
          readinessProbe:
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          livenessProbe:
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "driftline.volumeMounts" $root | nindent 12 }}
            {{- with include "driftline.extraList" (dict "root" $root "values" .values "key" "extraVolumeMounts") }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "driftline.volumes" $root | nindent 8 }}
        {{- with include "driftline.extraList" (dict "root" $root "values" .values "key" "extraVolumes") }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with include "driftline.priorityClassName" (dict "root" $root "values" .values) }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- range . }}
        - {{ toYaml (merge (dict) . (dict "labelSelector" (dict "matchLabels" (include "driftline.serviceSelectorLabels" $labels | fromYaml)))) | nindent 10 | trim }}
        {{- end }}
      {{- end }}
{{- end }}

{{/*
The ClusterIP Service of one component's web port; call with (dict "root" $ "component"
"<name>" "port" <port>).
*/}}
{{- define "driftline.service" -}}
{{- $labels := dict "root" .root "service" .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "driftline.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "driftline.serviceLabels" $labels | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "driftline.serviceSelectorLabels" $labels | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{/*
Where the drift service posts alerts for the retrain job: its Service, in the release namespace.
*/}}
{{- define "driftline.retrainUrl" -}}
{{- printf "http://%s-retrain:%d/retrain" (include "driftline.fullname" .) (int .Values.retrainJob.port) }}
{{- end }}
