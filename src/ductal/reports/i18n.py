"""The report's words in English and Simplified Chinese.

Method names from :mod:`ductal.stats` stay in English in both languages (as they are usually
printed in Chinese journals); everything a reader sees around them is translated here.
"""

from __future__ import annotations

LANGUAGES = ("en", "zh")

_STRINGS: dict[str, tuple[str, str]] = {
    # report frame
    "report_title": ("Efficacy report", "疗效分析报告"),
    "generated": ("Generated", "生成时间"),
    "data_extracted": ("Data extracted", "数据提取时间"),
    "database": ("Database", "数据库"),
    "audit_head": ("Audit chain head", "审计链头"),
    "contents": ("Contents", "目录"),
    "synthetic_note": (
        "All subjects in this database are synthetic unless the study team says otherwise.",
        "除非研究团队另行说明，本数据库中的所有受试者均为合成数据。",
    ),
    "not_computed": ("Not computed", "未计算"),
    "subjects_concerned": ("Subjects concerned", "涉及的受试者"),
    "method": ("Method", "方法"),
    "population": ("Population", "分析人群"),
    "source": ("Source", "来源"),
    "empty_study": (
        "This protocol has no subjects in the database: nothing could be analysed.",
        "数据库中该方案没有受试者，无法进行任何分析。",
    ),
    "no_protocols": (
        "The database holds no registered protocol.",
        "数据库中没有已注册的研究方案。",
    ),
    "fact_id": ("Protocol", "研究方案"),
    "fact_design": ("Design", "设计"),
    "fact_registration": ("Registration", "注册号"),
    "fact_arms": ("Arms", "组别"),
    "fact_endpoint": ("Primary endpoint", "主要终点"),
    "design_single_arm": ("single arm", "单臂"),
    "design_randomised": ("randomised", "随机对照"),
    "design_adaptive": ("adaptive randomised", "适应性随机"),
    "endpoint_fact": (
        "CR by day {days} ({horizon} + {grace} days of visit window); "
        "competing events: {competing}",
        "第{days}天内完全缓解（{horizon}天 + {grace}天访视窗）；竞争事件：{competing}",
    ),
    # populations
    "pop_itt": ("intention to treat", "意向性治疗（ITT）"),
    "pop_pp": ("per protocol", "符合方案（PP）"),
    "pop_cr_subjects": ("subjects with a complete response", "达到完全缓解的受试者"),
    "pop_enrolled": ("all enrolled", "全部入组受试者"),
    "pop_screened": ("all screened", "全部筛查者"),
    # sections
    "sec_overview": ("Study", "研究概况"),
    "sec_consort": ("Participant flow", "受试者流程"),
    "sec_baseline": ("Baseline characteristics", "基线特征"),
    "sec_cr_rate": ("Complete response rate", "完全缓解率"),
    "sec_time_to_cr": ("Time to complete response", "达完全缓解时间"),
    "sec_cif": (
        "Cumulative incidence of complete response with competing events",
        "考虑竞争事件的完全缓解累积发生率",
    ),
    "sec_relapse": ("Relapse after complete response", "完全缓解后复发"),
    "sec_subgroups": ("Subgroups and predictors of response", "亚组与疗效预测因素"),
    "sec_comparison": ("Non-inferiority comparison", "非劣效性比较"),
    "sec_adaptive": ("Interim looks and arm decisions", "期中分析与治疗组决策"),
    "sec_course": ("Course of each subject", "个体病程"),
    "sec_safety": ("Adverse events", "不良事件"),
    "sec_completeness": ("Data completeness", "数据完整性"),
    # consort
    "screened": ("Screened", "筛查"),
    "ineligible": ("Not eligible", "不符合入选标准"),
    "not_enrolled": ("Eligible, not enrolled", "符合标准但未入组"),
    "enrolled": ("Enrolled", "入组"),
    "allocated": ("Allocated", "分配"),
    "lost": ("Lost to follow-up", "失访"),
    "withdrawn": ("Withdrew", "退出"),
    "analysed_itt": ("Analysed (ITT)", "纳入分析（ITT）"),
    "analysed_pp": ("Analysed (per protocol)", "纳入分析（PP）"),
    "excluded_pp": ("Excluded from per protocol", "排除出符合方案集"),
    "reason": ("Reason", "原因"),
    "not_met": ("not met", "未满足"),
    "count": ("n", "例数"),
    # table 1
    "characteristic": ("Characteristic", "特征"),
    "all": ("All", "合计"),
    "age": ("Age, years, mean (SD)", "年龄（岁），均数（标准差）"),
    "bmi": ("Body mass index, kg/m², mean (SD)", "体重指数（kg/m²），均数（标准差）"),
    "diagnosis_igm": ("Diagnosis IGM, n (%)", "诊断为IGM，n（%）"),
    "diagnosis_pd": ("Diagnosis PD, n (%)", "诊断为PD，n（%）"),
    "severity": ("Severity score, median (IQR)", "严重程度评分，中位数（四分位距）"),
    "severe": ("Severe (score ≥ 6), n (%)", "重度（评分≥6），n（%）"),
    "infection": ("Evidence of bacterial infection, n (%)", "有细菌感染证据，n（%）"),
    "lesion": ("Lesion size, mm, median (IQR)", "病灶大小（mm），中位数（四分位距）"),
    "abscess": ("Abscess at baseline, n (%)", "基线脓肿，n（%）"),
    "fistula": ("Fistula / sinus at baseline, n (%)", "基线瘘管/窦道，n（%）"),
    "smoking": ("Current smoker, n (%)", "目前吸烟，n（%）"),
    "ana": ("ANA positive, n (%)", "ANA阳性，n（%）"),
    "erythema_nodosum": ("Erythema nodosum, n (%)", "结节性红斑，n（%）"),
    "hypothyroidism": ("Hypothyroidism, n (%)", "甲状腺功能减退，n（%）"),
    "sessions": ("Lavage sessions, median (IQR)", "冲洗次数，中位数（四分位距）"),
    "missing": ("missing", "缺失"),
    "table1_method": (
        "Descriptive statistics; percentages of subjects with the item recorded.",
        "描述性统计；百分比以记录该项目的受试者为分母。",
    ),
    # cr rate
    "arm": ("Arm", "组别"),
    "cr_by_horizon": ("CR by {months:g} months", "{months:g}个月内完全缓解"),
    "response_by_horizon": ("CR or PR by {months:g} months", "{months:g}个月内完全或部分缓解"),
    "events_n": ("Events / n", "事件数/例数"),
    "estimate": ("Estimate", "估计值"),
    "ci_exact": ("95% CI (exact)", "95% CI（精确法）"),
    "ci_wilson": ("95% CI (Wilson)", "95% CI（Wilson法）"),
    "benchmark": ("Benchmark", "文献基准"),
    "p_value": ("p", "P值"),
    "test": ("Test", "检验"),
    "this_study": ("This study", "本研究"),
    "cr_definition": (
        "A subject counts as a complete response when the derived response of a follow-up "
        "assessment on or before day {days} (the horizon plus the visit window) is CR and no "
        "competing therapy started before it. Subjects without an assessment count as "
        "non-responders (intention to treat).",
        "若在第{days}天（终点时间加访视窗）或之前的随访评估中按规则判定为完全缓解，且此前未开始"
        "竞争性治疗，则计为完全缓解。无评估的受试者按未缓解计（意向性治疗）。",
    ),
    "proportion_axis": ("Complete response rate", "完全缓解率"),
    "literature_range": ("literature range", "文献范围"),
    # time to cr
    "months": ("Months since enrolment", "入组后月数"),
    "cum_cr": ("Cumulative complete response", "累积完全缓解率"),
    "at_risk": ("At risk", "风险人数"),
    "median_cr": ("Median time to CR, months", "中位达完全缓解时间（月）"),
    "cr_at": ("CR by {m} months", "{m}个月完全缓解率"),
    "not_reached": ("not reached", "未达到"),
    "km_note": (
        "Kaplan–Meier estimate of 1 − S(t) with competing therapies (surgery, systemic therapy) "
        "treated as censoring at their start; 95% CI by the log transformation (R's default).",
        "Kaplan–Meier法估计1 − S(t)，竞争性治疗（手术、全身治疗）于开始时按删失处理；"
        "95% CI采用对数变换（R默认）。",
    ),
    "median_vs_range": (
        "Median time to CR {median} months against the {low:g}–{high:g} months reported for "
        "corticosteroids: {verdict}.",
        "中位达完全缓解时间{median}个月，糖皮质激素文献报道为{low:g}–{high:g}个月：{verdict}。",
    ),
    "below_range": ("faster than the range", "快于该范围"),
    "within_range": ("within the range", "处于该范围内"),
    "above_range": ("slower than the range", "慢于该范围"),
    "logrank": ("Log-rank test between arms", "组间Log-rank检验"),
    # cif
    "cif_cr": ("Complete response", "完全缓解"),
    "cif_competing": ("Competing therapy", "竞争性治疗"),
    "cif_axis": ("Cumulative incidence", "累积发生率"),
    "cause": ("Event", "事件"),
    "at_months": ("At {m} months", "{m}个月"),
    "gray": ("Gray's test", "Gray检验"),
    "beyond_follow_up": (
        "– : after the group's last follow-up time (as cmprsk::timepoints).",
        "– ：超出该组最长随访时间（同cmprsk::timepoints）。",
    ),
    "competing_list": ("Competing events: {events}.", "竞争事件：{events}。"),
    "no_competing": (
        "No competing event occurred: the cumulative incidence equals 1 − Kaplan–Meier.",
        "未发生竞争事件：累积发生率等于1 − Kaplan–Meier估计。",
    ),
    # relapse
    "relapse_rate": ("Relapse among complete responders", "完全缓解者中的复发率"),
    "relapse_ci": ("Cumulative incidence of relapse", "复发累积发生率"),
    "months_since_cr": ("Months since complete response", "完全缓解后月数"),
    "relapse_definition": (
        "Relapse: a follow-up assessment after the first CR with the relapse box ticked or a "
        "derived PD; time from the first CR, censored at the last assessment.",
        "复发：首次完全缓解后的随访评估中勾选复发或按规则判定为疾病进展；自首次完全缓解起计时，"
        "末次评估时删失。",
    ),
    # subgroups
    "subgroup": ("Subgroup", "亚组"),
    "level": ("Level", "水平"),
    "sg_diagnosis": ("Diagnosis", "诊断"),
    "sg_infection": ("Infection evidence", "感染证据"),
    "sg_severity": ("Severity", "严重程度"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "mild": ("mild", "轻度"),
    "severe_level": ("severe", "重度"),
    "cox_title": ("Cox model of time to CR", "达完全缓解时间的Cox模型"),
    "covariate": ("Covariate", "协变量"),
    "hr": ("Hazard ratio", "风险比"),
    "cox_note": (
        "Cause-specific Cox model (competing therapies censored); {n} subjects, {events} CRs; "
        "likelihood-ratio test χ² = {lr:.2f} on {df} df, p = {p}; concordance {c:.3f}.",
        "病因别Cox模型（竞争性治疗按删失处理）；{n}例，{events}例完全缓解；"
        "似然比检验χ² = {lr:.2f}，自由度{df}，P = {p}；一致性指数{c:.3f}。",
    ),
    "ph_check": ("Proportional hazards check (cox.zph)", "比例风险假定检验（cox.zph）"),
    # comparison
    "difference": ("Risk difference", "率差"),
    "margin": ("Non-inferiority margin", "非劣效界值"),
    "verdict": ("Verdict", "结论"),
    "non_inferior": ("non-inferior", "非劣效"),
    "not_shown": ("non-inferiority not shown", "未证明非劣效"),
    "difference_axis": (
        "Difference in CR rate ({a} − {b}), percentage points",
        "完全缓解率差（{a} − {b}），百分点",
    ),
    # adaptive
    "look": ("Look", "期中分析"),
    "with_outcome": ("Subjects with outcome", "有结局的受试者"),
    "responders": ("Responders / n", "缓解数/例数"),
    "posterior": ("P(rate > {thr:g})", "P(缓解率 > {thr:g})"),
    "decision": ("Decision", "决策"),
    "continue": ("continue", "继续"),
    "terminate": ("terminate", "终止"),
    "terminated_earlier": ("terminated earlier", "已终止"),
    "adaptive_rule": (
        "Looks after every {every} subjects with an outcome, in order of enrolment. An arm is "
        "terminated for inadequate response when the posterior probability that its response "
        "rate exceeds {thr:g} falls below {cut:g} (Beta(1, 1) prior; {how}).",
        "按入组顺序，每{every}例受试者获得结局时进行一次期中分析。若某组缓解率超过{thr:g}的后验概率"
        "低于{cut:g}，则因疗效不足终止该组（先验Beta(1, 1)；{how}）。",
    ),
    "response_axis": ("Response rate", "缓解率"),
    # course
    "swimmer_title": ("Swimmer plot", "泳道图"),
    "waterfall_title": ("Best change in lesion size", "病灶大小最佳变化"),
    "swimmer_sample": (
        "Showing {shown} of {total} subjects (evenly spaced by length of follow-up).",
        "显示{total}例中的{shown}例（按随访时长均匀抽取）。",
    ),
    "best_change_axis": ("Best change from baseline, %", "较基线最佳变化（%）"),
    "subjects_axis": ("Subjects", "受试者"),
    "lavage_session": ("Lavage session", "冲洗治疗"),
    "relapse": ("Relapse", "复发"),
    "rescue": ("Rescue therapy", "补救治疗"),
    "end_follow_up": ("Follow-up", "随访"),
    # safety
    "grade": ("CTCAE grade", "CTCAE分级"),
    "related": ("Related", "相关"),
    "unrelated": ("Not related", "无关"),
    "events": ("Events", "事件数"),
    "subjects_with": ("Subjects with ≥ 1 event", "发生≥1次事件的受试者"),
    "serious": ("Serious", "严重"),
    "ae_note": (
        "Related = possible, probable or definite relationship to study treatment.",
        "相关 = 与研究治疗可能有关、很可能有关或肯定有关。",
    ),
    # completeness
    "item": ("Item", "项目"),
    "value": ("Value", "数值"),
    "n_subjects_enrolled": ("Subjects enrolled", "入组受试者"),
    "n_assessments": ("Follow-up assessments", "随访评估"),
    "missed_visits": ("Scheduled visits missed", "缺失的计划访视"),
    "out_of_window": ("Assessments out of window", "超窗评估"),
    "missing_us": ("Assessments without ultrasound", "无超声的评估"),
    "no_assessment": ("Subjects with no follow-up assessment", "无随访评估的受试者"),
    "open_queries": ("Open data queries", "未关闭的数据质疑"),
    "derived_queries": ("of which response disagreements", "其中疗效评价不一致"),
    "disagreements": (
        "Investigator vs derived response disagreements",
        "研究者与规则判定的疗效不一致",
    ),
    "problems": ("Problems found while deriving the data", "数据推导中发现的问题"),
    "kind": ("Kind", "类别"),
    "detail": ("Detail", "详情"),
    "study_id": ("Study id", "研究编号"),
    # not computed reasons
    "nc_no_subjects": ("no enrolled subject", "没有入组受试者"),
    "nc_no_times": (
        "no enrolled subject has a follow-up assessment",
        "没有入组受试者有随访评估",
    ),
    "nc_no_events": ("no complete response was observed", "未观察到完全缓解"),
    "nc_no_relapse_pop": ("no subject reached a complete response", "没有受试者达到完全缓解"),
    "nc_one_arm": ("the protocol has a single arm", "该方案为单臂设计"),
    "nc_cox": ("the Cox model could not be fitted: {why}", "无法拟合Cox模型：{why}"),
    "nc_ni_arms": (
        "both arms need analysable subjects ({why})",
        "两组均需有可分析的受试者（{why}）",
    ),
    "nc_no_measure": (
        "no lesion size could be compared with baseline",
        "没有可与基线比较的病灶大小",
    ),
    "nc_no_ae": ("no adverse event was recorded", "未记录不良事件"),
    "nc_no_outcomes": ("no subject has an outcome yet", "尚无受试者获得结局"),
    "nc_subgroup": ("fewer than two levels with subjects", "有受试者的水平少于两个"),
    "nc_benchmark": ("no literature benchmark in the protocol", "方案中没有文献基准"),
}


# reasons written by ductal.outcomes.dataset (in English) and their translations
EXCLUSIONS: dict[str, tuple[str, str]] = {
    "no arm allocated": ("no arm allocated", "未分配组别"),
    "allocated treatment not received": ("allocated treatment not received", "未接受分配的治疗"),
    "no follow-up assessment": ("no follow-up assessment", "无随访评估"),
    "withdrew consent": ("withdrew consent", "撤回知情同意"),
    "lost to follow-up before the primary horizon": (
        "lost to follow-up before the primary horizon",
        "主要终点时间前失访",
    ),
}


def exclusion(reason: str, lang: str = "en") -> str:
    """Return a population exclusion reason in ``lang`` (unknown reasons as they are)."""
    pair = EXCLUSIONS.get(reason)
    if pair is None:
        return reason
    return pair[1] if lang.startswith("zh") else pair[0]


def t(key: str, lang: str = "en", **values: object) -> str:
    """Return the text ``key`` in ``lang`` (English when unknown), formatted with ``values``."""
    en, zh = _STRINGS[key]
    text = zh if lang.startswith("zh") else en
    return text.format(**values) if values else text
