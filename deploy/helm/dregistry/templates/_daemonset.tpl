{{/*
One DaemonSet of daemons. Called twice by daemonset.yaml with
(dict "root" $ "egress" BOOL): the egress set runs on the labelled nodes with
--egress, the other one on every other node, so each node gets one daemon.
*/}}
{{- define "dregistry.daemonset" -}}
{{- $ := .root -}}
{{- $v := $.Values -}}
{{- $name := include "dregistry.fullname" $ -}}
{{- $role := ternary "egress" "node" .egress -}}
{{- $authSecret := include "dregistry.registryAuthSecret" $ -}}
{{- $mountAuth := and $authSecret (or .egress (not $v.upstream.auth.egressOnly)) -}}
{{- $contentDir := printf "%s/io.containerd.content.v1.content" (trimSuffix "/" $v.containerd.root) -}}
{{- $socketDir := dir $v.containerd.socket -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ ternary (printf "%s-egress" $name) $name .egress }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "dregistry.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
spec:
  selector:
    matchLabels:
      {{- include "dregistry.selectorLabels" $ | nindent 6 }}
      app.kubernetes.io/component: {{ $role }}
  updateStrategy:
    {{- toYaml $v.updateStrategy | nindent 4 }}
  template:
    metadata:
      labels:
        {{- include "dregistry.selectorLabels" $ | nindent 8 }}
        app.kubernetes.io/component: {{ $role }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- /* Rolls the pods when the keys or credentials the chart made change. */}}
        checksum/secrets: {{ include (print $.Template.BasePath "/secrets.yaml") $ | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      # One daemon per node on the node's own addresses: containerd reaches
      # the mirror on 127.0.0.1 and peers reach each other on node IPs.
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      serviceAccountName: {{ include "dregistry.serviceAccountName" $ }}
      automountServiceAccountToken: false
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $v.egress.enabled }}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - key: {{ $v.egress.nodeLabel }}
                    operator: {{ ternary "In" "NotIn" .egress }}
                    values:
                      - {{ $v.egress.nodeLabelValue | quote }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        # root only to open containerd's socket and read its content store,
        # both owned by root; no capability is kept.
        runAsUser: 0
        runAsGroup: 0
        seccompProfile:
          type: RuntimeDefault
      {{- if $v.containerd.configureHosts }}
      initContainers:
        - name: configure-containerd
          image: {{ include "dregistry.image" $ }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command:
            - dregistry
          args:
            - containerd
            - configure
            - --hosts-dir=/host/etc/containerd/certs.d
            - --mirror=http://127.0.0.1:{{ $v.ports.http }}
            {{- range $v.containerd.registries }}
            - --registry={{ . }}
            {{- end }}
            {{- range $v.upstream.plainHTTP }}
            - --plain-http={{ . }}
            {{- end }}
            - --containerd-config=/host/etc/containerd/{{ $v.containerd.configFile }}
            - --containerd-address={{ $v.containerd.socket }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop:
                - ALL
          resources:
            {{- toYaml $v.daemon.initResources | nindent 12 }}
          volumeMounts:
            - name: containerd-config
              mountPath: /host/etc/containerd
              readOnly: true
            - name: containerd-hosts
              mountPath: /host/etc/containerd/certs.d
            - name: containerd-socket
              mountPath: {{ $socketDir }}
              readOnly: true
      {{- end }}
      containers:
        - name: dregistry
          image: {{ include "dregistry.image" $ }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command:
            - dregistry
          args:
            - daemon
            - --http-addr=:{{ $v.ports.http }}
            - --advertise-addr=$(HOST_IP)
            - --node-name=$(NODE_NAME)
            - --gossip-addr=:{{ $v.ports.gossip }}
            - --torrent-addr=:{{ $v.ports.torrent }}
            - --join={{ include "dregistry.join" $ }}
            - --reconnect-interval={{ $v.cluster.reconnectInterval }}
            - --reconnect-timeout={{ $v.cluster.reconnectTimeout }}
            - --cluster-key-file=/etc/dregistry/cluster-key/keys
            - --data-dir=/var/lib/dregistry
            {{- with $v.daemon.cacheSize }}
            - --cache-size={{ . }}
            {{- end }}
            - --containerd-address={{ $v.containerd.socket }}
            {{- with $v.containerd.namespaces }}
            - --containerd-namespaces={{ join "," . }}
            {{- end }}
            - --default-registry={{ $v.upstream.defaultRegistry }}
            {{- with $v.upstream.plainHTTP }}
            - --upstream-plain-http={{ join "," . }}
            {{- end }}
            {{- with $v.upstream.allowRegistries }}
            - --allow-registry={{ join "," . }}
            {{- end }}
            {{- with $v.daemon.mirrorAllow }}
            - --mirror-allow={{ join "," . }}
            {{- end }}
            {{- if $mountAuth }}
            - --registry-config=/etc/dregistry/registry-auth/config.json
            {{- end }}
            - --upload-limit={{ int64 $v.daemon.uploadLimit }}
            - --download-limit={{ int64 $v.daemon.downloadLimit }}
            - --max-conns={{ $v.daemon.maxConns }}
            - --lookup-timeout={{ $v.daemon.lookupTimeout }}
            - --stall-timeout={{ $v.daemon.stallTimeout }}
            - --abandon-timeout={{ $v.daemon.abandonTimeout }}
            - --tag-cache-ttl={{ $v.daemon.tagCacheTTL }}
            - --log-level={{ $v.daemon.logLevel }}
            {{- if .egress }}
            - --egress
            {{- end }}
            {{- range $v.daemon.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            - name: HOST_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.hostIP
            # The member name in the cluster: the Kubernetes node name.
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            # The Go runtime collects garbage before the memory limit is hit.
            - name: GOMEMLIMIT
              valueFrom:
                resourceFieldRef:
                  containerName: dregistry
                  resource: limits.memory
            {{- with $v.daemon.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ $v.ports.http }}
              hostPort: {{ $v.ports.http }}
              protocol: TCP
            - name: gossip-tcp
              containerPort: {{ $v.ports.gossip }}
              hostPort: {{ $v.ports.gossip }}
              protocol: TCP
            - name: gossip-udp
              containerPort: {{ $v.ports.gossip }}
              hostPort: {{ $v.ports.gossip }}
              protocol: UDP
            - name: torrent-tcp
              containerPort: {{ $v.ports.torrent }}
              hostPort: {{ $v.ports.torrent }}
              protocol: TCP
            - name: torrent-udp
              containerPort: {{ $v.ports.torrent }}
              hostPort: {{ $v.ports.torrent }}
              protocol: UDP
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $v.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $v.probes.readiness | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop:
                - ALL
          resources:
            {{- toYaml (ternary $v.daemon.egressResources $v.daemon.resources .egress) | nindent 12 }}
          volumeMounts:
            - name: containerd-socket
              mountPath: {{ $socketDir }}
              readOnly: true
            # Same path as on the host: containerd reports it, and blobs are
            # served from these files without a copy.
            - name: containerd-content
              mountPath: {{ $contentDir }}
              readOnly: true
            - name: data
              mountPath: /var/lib/dregistry
            - name: cluster-key
              mountPath: /etc/dregistry/cluster-key
              readOnly: true
            {{- if $mountAuth }}
            - name: registry-auth
              mountPath: /etc/dregistry/registry-auth
              readOnly: true
            {{- end }}
            - name: tmp
              mountPath: /tmp
      volumes:
        # The socket's directory, not the socket: a restarted containerd
        # makes a new socket file, which a file mount would not follow. (The
        # socket already grants root on the node; the directory adds nothing.)
        - name: containerd-socket
          hostPath:
            path: {{ $socketDir }}
            type: Directory
        - name: containerd-content
          hostPath:
            path: {{ $contentDir }}
            type: Directory
        - name: data
          hostPath:
            path: {{ $v.daemon.dataDir }}
            type: DirectoryOrCreate
        - name: cluster-key
          secret:
            secretName: {{ include "dregistry.clusterKeySecret" $ }}
            defaultMode: 0400
            items:
              - key: {{ $v.cluster.key.secretKey }}
                path: keys
        {{- if $mountAuth }}
        - name: registry-auth
          secret:
            secretName: {{ $authSecret }}
            defaultMode: 0400
            items:
              - key: .dockerconfigjson
                path: config.json
        {{- end }}
        {{- if $v.containerd.configureHosts }}
        - name: containerd-config
          hostPath:
            path: {{ $v.containerd.configDir }}
            type: DirectoryOrCreate
        - name: containerd-hosts
          hostPath:
            path: {{ $v.containerd.hostsDir }}
            type: DirectoryOrCreate
        {{- end }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end }}
